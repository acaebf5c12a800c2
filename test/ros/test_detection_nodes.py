"""
Detection, metrics and player nodes as real processes, driven by an in-process probe node.

The detection node's JSON is compared with the Detector run directly on the same real frame; the
metrics node's totals with DetectionAccumulator fed the same detections; the player's clean and
weather frames with the source file and with each other (same stamp).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from adaqual_ros.ros import params as ros_params

FOGGY = 'data/dawn_fog_dev/images/foggy-001.jpg'
DETECTOR = 'models/yolov8n_int8.onnx'


@pytest.fixture
def probe_factory(ros_env):
    from fixtures.restoration_probe import Probe

    probes = []

    def make(ns, node_name):
        probe = Probe(ns, node_name)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        probe.close()


def _args(ns, *params):
    out = ['--ros-args', '-r', f'__ns:={ns}']
    for item in params:
        out += ['-p', item]
    return out


def _json_for(messages, stamp_ns):
    for msg in messages:
        body = json.loads(msg.data)
        if body.get('stamp_ns') == stamp_ns:
            return body
    return None


# ---- plain-Python checks of the parameter tables ------------------------------------------

def test_parameter_tables_are_complete():
    from adaqual_ros.weather import CONDITIONS

    det = ros_params.spec_map(ros_params.DETECTION_PARAMS)
    for name in ('model', 'conf', 'iou', 'imgsz', 'device', 'half', 'classes', 'max_det'):
        assert name in det, name
    assert 'classes must be empty' in det['classes'].validate('car')
    assert det['classes'].validate(' 0, 2,7') is None
    assert ros_params.parse_classes('0, 2') == [0, 2] and ros_params.parse_classes('') is None
    player = ros_params.spec_map(ros_params.PLAYER_PARAMS)
    assert player['condition'].choices == CONDITIONS
    metrics = ros_params.spec_map(ros_params.METRICS_PARAMS)
    assert {'raw_topic', 'restored_topic', 'reference_topic', 'labels_dir'} <= set(metrics)
    for node in ('adaqual_detection', 'adaqual_metrics', 'adaqual_player'):
        assert node in ros_params.NODE_TABLES


def test_stamp_pairer_is_bounded():
    pytest.importorskip('rclpy')
    from adaqual_ros.ros.metrics_node import StampPairer

    pairer = StampPairer(('raw', 'ref'), capacity=2)
    assert pairer.add('raw', 1, 'a') is None
    assert pairer.add('ref', 1, 'b') == {'raw': 'a', 'ref': 'b'}
    for stamp in (2, 3, 4):
        pairer.add('raw', stamp, stamp)
    assert (pairer.pending, pairer.evicted, pairer.paired) == (2, 1, 1)
    assert pairer.add('ref', 2, 'late') is None  # evicted: starts a new slot, never paired
    with pytest.raises(ValueError, match='unknown stream'):
        pairer.add('other', 1, None)


def test_metrics_node_needs_something_to_score():
    pytest.importorskip('rclpy')
    from adaqual_ros.ros.metrics_node import _check_streams

    values = {'labels_dir': '', 'reference_topic': '', 'restored_topic': 'restored/detections'}
    assert _check_streams(values) is None  # agreement only
    assert 'nothing to score' in _check_streams(values | {'restored_topic': ''})
    assert _check_streams(values | {'restored_topic': '', 'reference_topic': 'c'}) is None


def test_player_source_reads_bags(tmp_path):
    pytest.importorskip('rclpy')
    from adaqual_ros.io.bags import BagWriter
    from adaqual_ros.ros.player_node import open_source

    frames = [np.full((24, 32, 3), v, np.uint8) for v in (10, 200)]
    with BagWriter(tmp_path / 'b.mcap') as bag:
        for i, rgb in enumerate(frames):
            bag.write_image('/cam/image_raw', rgb, 1000 + i, 'cam')
    got = list(open_source(tmp_path / 'b.mcap'))
    assert [(i, name) for i, _, name in got] == [(0, 'b.mcap:0'), (1, 'b.mcap:1')]
    np.testing.assert_array_equal(got[1][1], frames[1])


# ---- nodes ---------------------------------------------------------------------------------

@pytest.mark.ros
def test_detection_node_publishes_json_with_the_image_stamp(spawn, probe_factory, asset):
    from fixtures.restoration_probe import find_stamp, image_msg
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from ultralytics import YOLO

    from adaqual_ros.io.video import read_image

    model = asset(DETECTOR)
    rgb = read_image(asset(FOGGY))
    ns = '/t_detect'
    proc = spawn('adaqual_ros.ros.detection_node',
                 *_args(ns, f'model:={model}', 'conf:=0.25', 'publish_annotated:=true'))
    probe = probe_factory(ns, 'adaqual_detection')
    dets = probe.record('detections', String)
    drawn = probe.record('detections/image', Image)
    probe.wait_for_node(timeout=120.0)
    pub = probe.publisher('image_raw', Image)
    probe.wait_matched(pub, 'reliable', timeout=30.0)
    stamp = (1_700_000_123, 456_000_000)
    stamp_ns = stamp[0] * 10**9 + stamp[1]
    sent = image_msg(rgb[:, :, ::-1], 'bgr8', stamp, frame_id='front_camera')
    assert probe.spin_until(lambda: (pub.publish(sent), _json_for(dets, stamp_ns))[1],
                            timeout=60.0), proc.log_path.read_text()[-2000:]
    body = _json_for(dets, stamp_ns)
    assert body['header'] == {'stamp': {'sec': stamp[0], 'nanosec': stamp[1]},
                              'frame_id': 'front_camera'}
    assert body['image_size'] == list(rgb.shape[:2])
    assert body['published_ns'] > 0 and body['timing_ms']['inference'] > 0
    # ultralytics' own answer on the same frame (BGR numpy input, its default convention).
    ref = YOLO(str(model), task='detect').predict(rgb[:, :, ::-1].copy(), conf=0.25, iou=0.7,
                                                  verbose=False)[0]
    assert len(body['detections']) == len(ref.boxes) > 0
    got = np.array([d['bbox_xyxy'] for d in body['detections']])
    np.testing.assert_allclose(got, ref.boxes.xyxy.numpy(), atol=0.02)
    np.testing.assert_allclose([d['score'] for d in body['detections']],
                               ref.boxes.conf.numpy(), atol=1e-4)
    assert [d['label'] for d in body['detections']] == [ref.names[int(c)]
                                                        for c in ref.boxes.cls]
    assert probe.spin_until(lambda: find_stamp(drawn, stamp) is not None, timeout=10.0)
    image = find_stamp(drawn, stamp)
    assert (image.height, image.width, image.encoding) == (*rgb.shape[:2], 'rgb8')
    assert image.header.frame_id == 'front_camera'

    # Switched at run time to the compressed input: same frame (png, lossless), same boxes.
    from sensor_msgs.msg import CompressedImage

    from adaqual_ros.ros.conversions import cv2_to_compressed_imgmsg

    (result,) = probe.set_parameters(input_compressed=True)
    assert result.successful, result.reason
    (bad,) = probe.set_parameters(classes='car')
    assert not bad.successful and 'comma-separated class ids' in bad.reason
    cpub = probe.publisher('image_raw/compressed', CompressedImage)
    probe.wait_matched(cpub, 'reliable', timeout=30.0)
    packed = cv2_to_compressed_imgmsg(rgb, 'png', encoding='rgb8')
    packed.header.stamp.sec, packed.header.stamp.nanosec = stamp[0] + 1, stamp[1]
    assert probe.spin_until(lambda: (cpub.publish(packed), _json_for(dets, stamp_ns + 10**9))[1],
                            timeout=60.0), proc.log_path.read_text()[-2000:]
    again = _json_for(dets, stamp_ns + 10**9)
    assert [d['bbox_xyxy'] for d in again['detections']] == \
        [d['bbox_xyxy'] for d in body['detections']]
    assert proc.poll() is None


@pytest.mark.ros
def test_one_detection_process_serves_raw_and_restored_streams(spawn, probe_factory, asset):
    """cameras:=front,front/restored: one model, each stream's detections on its own topic."""
    from fixtures.restoration_probe import image_msg
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from adaqual_ros.detection.yolo import Detector
    from adaqual_ros.io.video import read_image

    model = asset(DETECTOR)
    rgb = read_image(asset(FOGGY))
    frames = {'front': rgb, 'front/restored': np.ascontiguousarray(rgb[:, ::-1])}
    ns = '/t_detect_streams'
    proc = spawn('adaqual_ros.ros.detection_node',
                 *_args(ns, f'model:={model}', 'conf:=0.25', 'cameras:=front,front/restored'))
    probe = probe_factory(ns, 'adaqual_detection')
    dets = {c: probe.record(f'{c}/detections', String) for c in frames}
    pubs = {c: probe.publisher(f'{c}/image_raw', Image) for c in frames}
    for pub in pubs.values():
        probe.wait_matched(pub, 'reliable', timeout=120.0)
    assert not probe.node.get_subscriptions_info_by_topic(probe.topic('image_raw'))
    stamp = (1_700_000_300, 0)  # the two streams of one camera share stamps
    stamp_ns = stamp[0] * 10**9
    sent = {c: image_msg(f, 'rgb8', stamp, frame_id='front_camera') for c, f in frames.items()}

    def answered():
        for c in frames:
            if _json_for(dets[c], stamp_ns) is None:
                pubs[c].publish(sent[c])
        return all(_json_for(dets[c], stamp_ns) for c in frames)

    assert probe.spin_until(answered, timeout=60.0), proc.log_path.read_text()[-2000:]
    detector = Detector(model, conf=0.25)
    for c, frame in frames.items():
        body = _json_for(dets[c], stamp_ns)
        ref = detector.detect(frame)
        assert len(body['detections']) == len(ref.boxes) > 0, c
        np.testing.assert_allclose([d['bbox_xyxy'] for d in body['detections']], ref.boxes,
                                   atol=0.05)
    # each stream was served its own frame (the mirrored one has other boxes)
    assert _json_for(dets['front'], stamp_ns)['detections'] != \
        _json_for(dets['front/restored'], stamp_ns)['detections']
    # Sent once to each stream, a shared stamp is no duplicate (the resends above were).
    # let the resends drain: every frame received is accounted for, none pending
    probe.spin_for(3.0)
    assert probe.spin_until(lambda: probe.figure('pending') == 0 and probe.figure(
        'frames_in') == probe.figure('published') + probe.figure('dropped'), timeout=10.0)
    duplicates = probe.figure('dropped.duplicate_stamp')
    stamp_ns += 10**9
    for c, frame in frames.items():
        pubs[c].publish(image_msg(frame, 'rgb8', (stamp[0] + 1, 0)))
    assert probe.spin_until(lambda: all(_json_for(dets[c], stamp_ns) for c in frames),
                            timeout=60.0), proc.log_path.read_text()[-2000:]
    # (diagnostics come once a second)
    assert probe.spin_until(lambda: all(probe.figure(f'camera.{c}.frames_out') >= 2
                                        for c in frames), timeout=10.0), probe.figures()
    assert probe.figure('dropped.duplicate_stamp') == duplicates
    assert proc.poll() is None


def _fake(boxes, scores, classes, size=(120, 160)):
    from adaqual_ros.detection.yolo import Detections

    return Detections(boxes, scores, classes, {0: 'person', 2: 'car'}, size)


@pytest.mark.ros
def test_metrics_node_pairs_by_stamp_and_reports_on_trigger(spawn, probe_factory, tmp_path):
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from adaqual_ros.detection.yolo import Detections
    from adaqual_ros.metrics.detection import DetectionAccumulator

    ns = '/t_metrics'
    out = tmp_path / 'report'
    proc = spawn('adaqual_ros.ros.metrics_node',
                 *_args(ns, f'report_dir:={out}', 'buffer_size:=100', 'plots:=false'))
    probe = probe_factory(ns, 'adaqual_metrics')
    pubs = {name: probe.publisher(f'{name}/detections', String)
            for name in ('raw', 'restored', 'clean')}
    for pub in pubs.values():
        probe.wait_matched(pub, timeout=60.0)
    rng = np.random.default_rng(3)
    expected = {'raw': DetectionAccumulator(), 'restored': DetectionAccumulator()}
    messages = []
    for i in range(30):
        stamp_ns = 1_700_000_000 * 10**9 + i * 50_000_000
        xy = rng.uniform(0, 100, (4, 2))
        ref_boxes = np.hstack([xy, xy + rng.uniform(10, 50, (4, 2))])
        ref_classes = rng.choice([0, 2], 4)
        # Distinct scores: AP sorts by confidence, and ties would make the order of images count.
        ref = _fake(ref_boxes, [0.9, 0.8, 0.7, 0.1], ref_classes)  # the 0.1 box is not an object
        restored = _fake(ref_boxes[:3] + rng.normal(0, 2, (3, 4)), rng.uniform(0.3, 1, 3),
                         ref_classes[:3])
        raw = _fake(ref_boxes[:1] + rng.normal(0, 6, (1, 4)), rng.uniform(0.3, 1, 1),
                    ref_classes[:1])
        bodies = {name: dets.to_dict() | {'stamp_ns': stamp_ns, 'published_ns': stamp_ns + 10**7}
                  for name, dets in (('raw', raw), ('restored', restored), ('clean', ref))}
        sent_ref = Detections.from_dict(bodies['clean'])  # what the node sees (JSON-rounded)
        for name in ('raw', 'restored'):
            expected[name].add_detections(Detections.from_dict(bodies[name]), sent_ref,
                                          reference_conf=0.25)
        messages += list(bodies.items())
    # Arrival order differs per stream: pairing must go by stamp, not by position.
    order = rng.permutation(len(messages))
    for k in order:
        name, body = messages[k]
        pubs[name].publish(String(data=json.dumps(body)))
    # Three stamps with no reference never pair.
    for i in range(3):
        pubs['raw'].publish(String(data=json.dumps(
            _fake([[0, 0, 5, 5]], [0.5], [0]).to_dict() | {'stamp_ns': i + 1})))
    probe.spin_for(2.0)
    response = probe.call(Trigger, 'write_report', Trigger.Request(), timeout=60.0)
    assert response.success, response.message
    summary = json.loads(response.message)
    assert summary['pairing']['paired'] == 30 and summary['pairing']['pending'] == 3
    doc = json.loads((out / 'report.json').read_text())
    for name, acc in expected.items():
        want = acc.compute()
        got = doc['results'][name]
        assert got['images'] == 30 and got['instances'] == want['instances'] == 90
        for key in ('precision', 'recall', 'mAP50', 'mAP50-95'):
            assert got[key] == pytest.approx(want[key], abs=1e-9), (name, key)
    assert doc['results']['restored']['mAP50'] > doc['results']['raw']['mAP50']
    # the raw-only stamps have no restored partner
    assert doc['agreement']['restored']['images'] == 30
    assert doc['latency_ms']['raw']['p50'] == pytest.approx(10.0)
    assert '| restored | 30 | 90 |' in (out / 'report.md').read_text()
    assert proc.poll() is None


@pytest.mark.ros
@pytest.mark.parametrize('reference', ["''", 'clean/detections'], ids=['none', 'silent'])
def test_metrics_node_without_a_reference_reports_raw_vs_restored_agreement(
        spawn, probe_factory, tmp_path, reference):
    """A robot's camera: no labels, no clean frames; the report says what restoration changed.
    Either no reference is configured, or the configured one never publishes."""
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    ns = '/t_metrics_field'
    out = tmp_path / 'report'
    proc = spawn('adaqual_ros.ros.metrics_node',
                 *_args(ns, f'report_dir:={out}', 'plots:=false', f'reference_topic:={reference}'))
    probe = probe_factory(ns, 'adaqual_metrics')
    pubs = {name: probe.publisher(f'{name}/detections', String) for name in ('raw', 'restored')}
    for pub in pubs.values():
        probe.wait_matched(pub, timeout=60.0)
    frames = 12
    for i in range(frames):
        stamp_ns = 1_700_000_500 * 10**9 + i * 10**8
        # Three people both streams see (restored: 1 px off, more confident), a car only the
        # restored frame shows, a person only the raw one does, and a weak box below 0.25.
        people = np.array([[10, 10, 30, 60], [50, 10, 70, 60], [90, 10, 110, 60]], float)
        raw = _fake(np.vstack([people, [[120, 70, 150, 110], [0, 70, 20, 110]]]),
                    [0.5, 0.6, 0.4, 0.7, 0.2], [0, 0, 0, 0, 2])
        restored = _fake(np.vstack([people + 1.0, [[40, 70, 80, 110]]]),
                         [0.8, 0.7, 0.6, 0.9], [0, 0, 0, 2])
        for name, dets in (('raw', raw), ('restored', restored)):
            body = dets.to_dict() | {'stamp_ns': stamp_ns, 'published_ns': stamp_ns + 10**7}
            pubs[name].publish(String(data=json.dumps(body)))
    probe.spin_for(2.0)
    response = probe.call(Trigger, 'write_report', Trigger.Request(), timeout=60.0)
    assert response.success, response.message
    doc = json.loads((out / 'report.json').read_text())
    a = doc['agreement']['restored']
    assert (a['images'], a['raw_objects'], a['restored_objects']) == (frames, 4 * frames,
                                                                      4 * frames)
    assert (a['matched'], a['only_restored'], a['only_raw']) == (3 * frames, frames, frames)
    assert a['per_class']['car'] == {'raw_objects': 0, 'restored_objects': frames, 'matched': 0,
                                     'only_raw': 0, 'only_restored': frames}
    assert a['matched_conf_raw'] == pytest.approx(0.5, abs=1e-3)
    assert a['matched_conf_restored'] == pytest.approx(0.7, abs=1e-3)
    # No reference arrived: no accuracy rows (zeros would read as a blind detector).
    assert doc['results'] == {} and 'not scored' in doc['meta']['accuracy']
    assert json.loads(response.message)['agreement']['matched'] == 3 * frames
    assert doc['latency_ms']['restored']['p50'] == pytest.approx(10.0)  # published - stamp
    md = (out / 'report.md').read_text()
    assert f'| restored | {frames} | {4 * frames} | {4 * frames} | {3 * frames} |' in md
    assert proc.poll() is None
    if reference == "''":
        assert 'agreement only' in proc.log_path.read_text()

@pytest.mark.ros
def test_player_publishes_weather_and_clean_frames_with_one_stamp(spawn, probe_factory, asset,
                                                                 tmp_path):
    import shutil

    import cv2
    from fixtures.restoration_probe import find_stamp, stamp_of
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from adaqual_ros.io.video import read_image
    from adaqual_ros.ros.conversions import imgmsg_to_cv2

    folder = tmp_path / 'frames'
    folder.mkdir()
    names = ['foggy-001.jpg', 'foggy-004.jpg']
    for name in names:
        shutil.copy(asset(f'data/dawn_fog_dev/images/{name}'), folder / name)
    ns = '/t_player'
    probe = probe_factory(ns, 'adaqual_player')
    degraded = probe.record('image_raw', Image)
    clean = probe.record('clean/image_raw', Image)
    infos = probe.record('camera_info', CameraInfo)
    frames = probe.record('frame_info', String)
    proc = spawn('adaqual_ros.ros.player_node',
                 *_args(ns, f'source:={folder}', 'publish_rate:=0.1', 'condition:=haze',
                        'severity:=0.7', 'width:=320', 'frame_id:=cam', 'loop:=true',
                        'max_frames:=6'))
    # Start slow (first frame after 10 s), and speed up once every topic is matched, so no
    # frame goes out before the probe listens.
    topics = [probe.topic(t) for t in ('image_raw', 'clean/image_raw', 'camera_info',
                                       'frame_info')]
    assert probe.spin_until(lambda: all(probe.node.count_publishers(t) for t in topics),
                            timeout=60.0), proc.log_path.read_text()[-2000:]
    probe.spin_for(0.5)
    (result,) = probe.set_parameters(publish_rate=4.0, timeout=30.0)
    assert result.successful, result.reason
    ends = lambda: [m for m in frames if json.loads(m.data).get('end')]  # noqa: E731
    assert probe.spin_until(lambda: ends(), timeout=90.0), proc.log_path.read_text()[-2000:]
    probe.spin_for(0.5)
    # Two files, looped, 6 frames: each degraded and clean, with one stamp, and camera_info.
    infos_json = [json.loads(m.data) for m in frames if not json.loads(m.data).get('end')]
    assert json.loads(ends()[0].data)['frames'] == 6
    assert [info['sequence'] for info in infos_json] == list(range(6))
    assert [info['name'] for info in infos_json] == names * 3
    for info in infos_json:
        stamp = divmod(info['stamp_ns'], 10**9)
        d, c = find_stamp(degraded, stamp), find_stamp(clean, stamp)
        assert d is not None and c is not None and find_stamp(infos, stamp) is not None
        assert d.header.frame_id == c.header.frame_id == 'cam'
        assert (d.width, d.encoding) == (320, 'rgb8')
        clean_rgb, hazy = imgmsg_to_cv2(c), imgmsg_to_cv2(d)
        source = read_image(folder / info['name'])
        assert clean_rgb.shape == (round(source.shape[0] * 320 / source.shape[1]), 320, 3)
        want = cv2.resize(source, (320, clean_rgb.shape[0]), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(clean_rgb, want)
        assert np.abs(hazy.astype(int) - clean_rgb).mean() > 5, 'no weather applied'
        assert info['condition'] == 'haze' and stamp_of(d) == stamp


@pytest.mark.ros
def test_metrics_node_scores_against_label_files(spawn, probe_factory, tmp_path, asset):
    import shutil

    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from adaqual_ros.metrics.detection import DetectionAccumulator, load_yolo_labels

    labels = tmp_path / 'labels'
    labels.mkdir()
    stems = ['foggy-004', 'foggy-018']  # 12 and 14 labelled objects
    for stem in stems:
        shutil.copy(asset(f'data/dawn_fog_dev/labels/{stem}.txt'), labels / f'{stem}.txt')
    ns = '/t_metrics_labels'
    out = tmp_path / 'report'
    spawn('adaqual_ros.ros.metrics_node',
          *_args(ns, f'report_dir:={out}', f'labels_dir:={labels}', "restored_topic:=''",
                 'plots:=false'))
    probe = probe_factory(ns, 'adaqual_metrics')
    raw_pub = probe.publisher('raw/detections', String)
    info_pub = probe.publisher('frame_info', String)
    probe.wait_matched(raw_pub, timeout=60.0)
    probe.wait_matched(info_pub, timeout=60.0)
    size = (640, 1280)
    expected = DetectionAccumulator()
    for i, stem in enumerate(stems):
        gt_boxes, gt_classes = load_yolo_labels(labels / f'{stem}.txt', size)
        # A detector that finds the first two labelled objects, slightly off.
        dets = _fake(gt_boxes[:2] + 3.0, [0.8 - 0.1 * i, 0.55 + 0.1 * i], gt_classes[:2], size)
        expected.add(dets.boxes, dets.scores, dets.class_ids, gt_boxes, gt_classes)
        stamp_ns = 2_000_000_000 + i
        info_pub.publish(String(data=json.dumps({'stamp_ns': stamp_ns, 'index': i,
                                                 'name': f'{stem}.jpg'})))
        raw_pub.publish(String(data=json.dumps(dets.to_dict() | {'stamp_ns': stamp_ns})))
    info_pub.publish(String(data=json.dumps({'end': True, 'frames': 2})))  # not a frame
    raw_pub.publish(String(data='{"stamp_ns": 5, "detections": [{"bbox'))  # broken: counted
    probe.spin_for(1.5)
    response = probe.call(Trigger, 'write_report', Trigger.Request(), timeout=60.0)
    assert response.success, response.message
    pairing = json.loads(response.message)['pairing']
    assert (pairing['paired'], pairing['bad_messages'], pairing['pending']) == (2, 1, 0)
    got = json.loads((out / 'report.json').read_text())['results']
    assert set(got) == {'raw'}
    want = expected.compute()
    assert got['raw']['images'] == 2 and got['raw']['instances'] == want['instances'] > 2
    assert got['raw']['mAP50'] == pytest.approx(want['mAP50'], abs=1e-9)
    assert 0.0 < got['raw']['recall'] < 1.0


# ---- issue 9: bad input and faults, against one detection node process -----------------------

def _accounted(probe):
    figures = probe.figures()
    total = sum(int(figures[k]) for k in ('published', 'passed_through', 'dropped', 'pending'))
    assert int(figures['frames_in']) == total, figures
    reasons = sum(int(v) for k, v in figures.items() if k.startswith('dropped.'))
    assert reasons == int(figures['dropped']), figures


@pytest.mark.ros
def test_detection_node_survives_bad_input_and_faults(spawn, probe_factory, asset, tmp_path):
    """One row of the README's bad-input table per step; the node serves a real frame after."""
    import cv2
    from fixtures.restoration_probe import image_msg
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    from adaqual_ros.detection.yolo import Detector
    from adaqual_ros.io.video import read_image
    from adaqual_ros.ros.conversions import cv2_to_compressed_imgmsg

    model = asset(DETECTOR)
    full = read_image(asset(FOGGY))
    small = np.ascontiguousarray(full[::4, ::4])
    ns = '/t_detect_bad'
    junk = tmp_path / 'broken.onnx'
    junk.write_bytes(b'\x08\x07this is not an onnx model' * 50)
    proc = spawn('adaqual_ros.ros.detection_node',
                 *_args(ns, f'model:={model}', 'diagnostics_period_s:=0.25'))
    # Start-up faults, in their own processes: a missing and an unloadable model.
    missing = spawn('adaqual_ros.ros.detection_node',
                    *_args('/t_detect_missing', 'model:=/nonexistent/yolo.onnx'))
    broken = spawn('adaqual_ros.ros.detection_node', *_args('/t_detect_broken', f'model:={junk}'))
    probe = probe_factory(ns, 'adaqual_detection')
    dets = probe.record('detections', String)
    probe.wait_for_node(timeout=120.0)
    pub = probe.publisher('image_raw', Image)
    probe.wait_matched(pub, 'reliable', timeout=30.0)
    sent = [0]

    def send(msg, counter, publisher=pub, at_least=None):
        before = probe.figure(counter)
        sent[0] += 1
        publisher.publish(msg)
        probe.wait_figure(counter, before + 1 if at_least is None else at_least, timeout=60.0)
        probe.wait_settled(sent[0], timeout=60.0)

    def body(stamp):
        assert probe.spin_until(lambda: _json_for(dets, stamp[0] * 10**9 + stamp[1]),
                                timeout=30.0), f'no detections for {stamp}'
        return _json_for(dets, stamp[0] * 10**9 + stamp[1])

    send(image_msg(small, 'rgb8', (10, 0)), 'published')
    reference = body((10, 0))['detections']
    assert reference, 'the real frame should have detections'

    unknown = image_msg(small, 'rgb8', (11, 0))
    unknown.encoding = 'rgb9000'
    send(unknown, 'dropped.unknown_encoding')
    short = image_msg(small, 'rgb8', (12, 0))
    short.data = short.data[:len(short.data) // 2]
    send(short, 'dropped.bad_data')
    empty = image_msg(small, 'rgb8', (13, 0))
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, []
    send(empty, 'dropped.empty_frame')
    depth = np.full((48, 64), 0.5, np.float32)
    depth[3, 4] = np.nan
    send(image_msg(depth, '32FC1', (14, 0)), 'dropped.non_finite')
    depth[3, 4] = np.inf
    send(image_msg(depth, '32FC1', (14, 500)), 'dropped.non_finite')
    send(image_msg(np.zeros((8, 8, 3), np.float32), '32FC3', (14, 700)),
         'dropped.unsupported_encoding')

    send(image_msg(small, 'rgb8', (16, 0)), 'published')
    send(image_msg(small, 'rgb8', (16, 0)), 'dropped.duplicate_stamp')
    send(image_msg(small, 'rgb8', (15, 500)), 'event.out_of_order_stamp')
    assert body((15, 500))['detections'] == reference  # older, yet served

    # A new resolution: counted, and detected at its own size.
    half = np.ascontiguousarray(full[::2, ::2])
    send(image_msg(half, 'rgb8', (17, 0)), 'event.resolution_changed')
    assert body((17, 0))['image_size'] == list(half.shape[:2])

    # 7680x4320: shrunk to max_pixels (3840x2160) before YOLO, boxes in the frame's pixels,
    # equal to the detector run directly on the same shrunk frame.
    huge = cv2.resize(full, (7680, 4320), interpolation=cv2.INTER_LINEAR)
    send(image_msg(huge, 'rgb8', (18, 0)), 'event.downscaled')
    got = body((18, 0))
    assert got['image_size'] == [4320, 7680]
    want = Detector(model).detect(cv2.resize(huge, (3840, 2160), interpolation=cv2.INTER_AREA))
    assert len(got['detections']) == len(want) > 0
    np.testing.assert_allclose([d['bbox_xyxy'] for d in got['detections']],
                               np.asarray(want.boxes) * 2.0, atol=0.1)
    del huge

    # Faults in the worker: a run-time switch to a model that cannot load (and, without CUDA,
    # to a device that cannot run): logged, counted, the loaded detector keeps serving.
    (result,) = probe.set_parameters(model=str(junk))
    assert result.successful, result.reason
    send(image_msg(small, 'rgb8', (19, 0)), 'event.model_load_failed')
    assert body((19, 0))['detections'] == reference
    # The node reports the resolved path (assets may sit behind a symlink).
    assert Path(probe.figures()['model']).resolve() == Path(model).resolve()
    import torch

    if not torch.cuda.is_available():
        results = probe.set_parameters(model=str(model), device='cuda:0')
        assert all(r.successful for r in results), [r.reason for r in results]
        send(image_msg(small, 'rgb8', (20, 0)), 'event.model_load_failed')
        assert body((20, 0))['detections'] == reference
        assert probe.figures()['device'] == 'cpu'
        assert probe.set_parameters(device='cpu')[0].successful
    assert probe.set_parameters(model=str(model))[0].successful

    # Compressed input: undecodable bytes are dropped; a real png is detected.
    assert probe.set_parameters(input_compressed=True)[0].successful
    cpub = probe.publisher('image_raw/compressed', CompressedImage)
    probe.wait_matched(cpub, 'reliable', timeout=30.0)
    garbage = CompressedImage(format='jpeg', data=b'not a jpeg at all')
    garbage.header.stamp.sec = 21
    send(garbage, 'dropped.decode_error', cpub)
    packed = cv2_to_compressed_imgmsg(small, 'png', encoding='rgb8')
    packed.header.stamp.sec = 22
    send(packed, 'published', cpub)
    assert body((22, 0))['detections'] == reference

    assert proc.poll() is None, proc.log_path.read_text()[-3000:]
    assert int(probe.figure('frames_in')) == sent[0]
    assert int(probe.figure('errors')) >= 1
    _accounted(probe)
    log = proc.log_path.read_text()
    for reason in ('unknown_encoding', 'bad_data', 'empty_frame', 'non_finite', 'decode_error',
                   'duplicate_stamp'):
        # Rate-limited: one warning per reason within 5 s, though non_finite came twice.
        assert log.count(f'frame dropped ({reason})') == 1, reason

    for start_fault, words in ((missing, 'does not exist'), (broken, 'cannot use detector')):
        assert start_fault.wait(timeout=120) == 1
        text = start_fault.log_path.read_text()
        assert 'cannot start' in text and words in text, text[-2000:]
        assert 'Traceback' not in text, text[-2000:]
