"""
The metrics node: before/after detection quality, paired by image stamp.

Topics and services (relative names):

- in  `raw/detections` and `restored/detections` (the detection node's JSON, parameters
  `raw_topic`, `restored_topic`), and a reference: `clean/detections` (detections on the clean
  frames, `reference_topic`) or YOLO label files (`labels_dir`) found through the player's
  `frame_info` JSON (frame name per stamp).
- service `write_report` (std_srvs/Trigger): write report.json + report.md (+ plots) now;
  the report is also written on shutdown (`report_on_shutdown`).

Accuracy needs the reference. Raw vs restored agreement does not: every stamp with both
detections also adds to an `AgreementAccumulator` (objects both streams see, only restored,
only raw, their confidence), so a robot's own camera, with no labels and no clean frames, still
gets numbers on what restoration changes for its detector.

Messages are paired by exact header stamp (what message_filters.TimeSynchronizer does) in a
bounded buffer: a stamp still incomplete when `buffer_size` newer ones are waiting is evicted and
counted. Each complete stamp adds one image to the raw and restored accumulators
(`adaqual_ros.metrics.detection`, ultralytics' matching and AP code). End-to-end latency per
stream is the detection's publish time minus the image stamp.
"""
from collections import OrderedDict
import json
from pathlib import Path
import sys
import threading

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from adaqual_ros.detection.yolo import Detections
from adaqual_ros.metrics.agreement import AgreementAccumulator
from adaqual_ros.metrics.detection import DetectionAccumulator, load_yolo_labels
from adaqual_ros.metrics.report import latency_summary, write_report
from adaqual_ros.ros.node_parts import run_node
from adaqual_ros.ros.params import METRICS_PARAMS, ParamBinding

NODE_NAME = 'adaqual_metrics'
_LOG_EVERY_S = 5.0


def _json_qos():
    # Results are small and every one counts: reliable, deep queue.
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class StampPairer:
    """
    Group messages of several streams by stamp; emit a group once every stream has arrived.

    Args:
        streams (`tuple[str]`): the stream names a complete group needs.
        capacity (`int`): most incomplete stamps kept; the oldest is evicted beyond that.
    """

    def __init__(self, streams, capacity):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.streams = tuple(streams)
        self.capacity = int(capacity)
        self._slots = OrderedDict()
        self.paired = 0
        self.evicted = 0
        self.duplicates = 0

    def add(self, stream, stamp, item):
        """Store one item; return the complete {stream: item} group for `stamp`, or None."""
        if stream not in self.streams:
            raise ValueError(f'unknown stream {stream!r}; expected one of {self.streams}')
        slot = self._slots.setdefault(stamp, {})
        if stream in slot:
            self.duplicates += 1
        slot[stream] = item
        if all(s in slot for s in self.streams):
            del self._slots[stamp]
            self.paired += 1
            return slot
        while len(self._slots) > self.capacity:
            self._slots.popitem(last=False)
            self.evicted += 1
        return None

    @property
    def pending(self):
        return len(self._slots)


class MetricsNode(Node):
    """
    ROS 2 node accumulating precision, recall, mAP50 and mAP50-95 of raw vs restored detections.

    Args:
        node_name (`str`, *optional*, defaults to `'adaqual_metrics'`): the node name.
        **kwargs: passed to `rclpy.node.Node`.
    """

    def __init__(self, node_name=NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = ParamBinding(self, METRICS_PARAMS, rule=_check_streams)
        values = self.params.values
        self._lock = threading.Lock()
        self._rows = ['raw'] + (['restored'] if values['restored_topic'] else [])
        self._labels_dir = Path(values['labels_dir']) if values['labels_dir'] else None
        reference = 'info' if self._labels_dir else 'reference'
        # No labels and no reference topic (a robot's own camera): agreement only.
        self._pairer = (StampPairer((*self._rows, reference), values['buffer_size'])
                        if self._labels_dir or values['reference_topic'] else None)
        # raw and restored alone: agreement needs no reference
        self._agree_pairer = self._agreement = None
        if len(self._rows) == 2:
            self._agree_pairer = StampPairer(self._rows, values['buffer_size'])
            self._agreement = AgreementAccumulator(conf=values['reference_conf'])
        self._names = {}
        self._acc = {row: DetectionAccumulator() for row in self._rows}
        self._latency = {row: [] for row in self._rows}
        self._errors = 0
        self._label_files = None
        qos = _json_qos()
        self._subs = [self.create_subscription(
            String, values['raw_topic'], lambda m: self._on_json('raw', m), qos)]
        if 'restored' in self._rows:
            self._subs.append(self.create_subscription(
                String, values['restored_topic'], lambda m: self._on_json('restored', m), qos))
        if self._labels_dir:
            self._subs.append(self.create_subscription(
                String, values['frame_info_topic'], self._on_frame_info, qos))
            source = f'labels in {self._labels_dir}'
        elif self._pairer is not None:
            self._subs.append(self.create_subscription(
                String, values['reference_topic'], lambda m: self._on_json('reference', m), qos))
            source = f'reference detections on {values["reference_topic"]}'
        self.create_service(Trigger, 'write_report', self._on_trigger)
        if self._pairer is None:
            self.get_logger().info('no reference: raw vs restored agreement only')
        else:
            self.get_logger().info(f'scoring {", ".join(self._rows)} against {source}')

    # ---- inputs --------------------------------------------------------------------------

    def _on_json(self, stream, msg):
        try:
            body = json.loads(msg.data)
            stamp = int(body['stamp_ns'])
            dets = Detections.from_dict(body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._errors += 1
            self.get_logger().warning(f'bad detections JSON on {stream}: {exc}',
                                      throttle_duration_sec=_LOG_EVERY_S)
            return
        self._names.update(dets.names)
        self._add(stream, stamp, (dets, body.get('published_ns')))

    def _on_frame_info(self, msg):
        try:
            body = json.loads(msg.data)
            if body.get('end'):
                return  # the player's end-of-source marker carries no frame
            stamp = int(body['stamp_ns'])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._errors += 1
            self.get_logger().warning(f'bad frame_info JSON: {exc}',
                                      throttle_duration_sec=_LOG_EVERY_S)
            return
        self._add('info', stamp, body)

    def _add(self, stream, stamp, item):
        with self._lock:
            group = None if self._pairer is None else self._pairer.add(stream, stamp, item)
            if group is not None:
                self._score(stamp, group)
            if self._agree_pairer is not None and stream in self._rows:
                pair = self._agree_pairer.add(stream, stamp, item)
                if pair is not None:
                    self._agreement.add(pair['raw'][0], pair['restored'][0])
                    self._record_latency(stamp, pair)

    # ---- scoring -------------------------------------------------------------------------

    def _label_path(self, info):
        name = info.get('name') or ''
        path = self._labels_dir / (Path(name.split(':')[0]).stem + '.txt')
        if name and ':' not in name:
            return path
        # A video frame has no file name: use the index-th label file (sorted by name).
        if self._label_files is None:
            self._label_files = sorted(self._labels_dir.glob('*.txt'))
        index = int(info.get('index', -1))
        return self._label_files[index] if 0 <= index < len(self._label_files) else None

    def _score(self, stamp, group):
        if self._labels_dir:
            size = group['raw'][0].image_size
            path = self._label_path(group['info'])
            if path is None:
                self._errors += 1
                self.get_logger().warning(f'no label file for frame {group["info"]}',
                                          throttle_duration_sec=_LOG_EVERY_S)
                return
            gt_boxes, gt_classes = load_yolo_labels(path, size)
        else:
            ref = group['reference'][0]
            keep = ref.scores >= self.params['reference_conf']
            gt_boxes, gt_classes = ref.boxes[keep], ref.class_ids[keep]
        for row in self._rows:
            dets = group[row][0]
            self._acc[row].add(dets.boxes, dets.scores, dets.class_ids, gt_boxes, gt_classes)
        if self._agree_pairer is None:  # raw only; else every raw+restored pair counts
            self._record_latency(stamp, group)

    def _record_latency(self, stamp, group):
        for row in self._rows:
            published_ns = group[row][1]
            if published_ns:
                self._latency[row].append((int(published_ns) - stamp) / 1e6)

    def results(self):
        """Current metrics per row, plus pairing counts."""
        with self._lock:
            out = {}
            for row, acc in self._acc.items():
                acc.names = dict(self._names)
                out[row] = acc.compute()
            pairer = self._pairer
            pairing = {key: getattr(pairer, key) if pairer is not None else 0  # no reference
                       for key in ('paired', 'evicted', 'pending', 'duplicates')}
            pairing['bad_messages'] = self._errors
            latency = {row: list(v) for row, v in self._latency.items()}
            agreement = None
            if self._agree_pairer is not None:
                self._agreement.names = dict(self._names)
                agreement = self._agreement.compute()
        return out, pairing, latency, agreement

    def write(self):
        """Write the report; return (report.json path, results, pairing, latency, agreement)."""
        results, pairing, latency, agreement = self.results()
        values = self.params.values
        meta = {'node': self.get_fully_qualified_name(),
                'reference': values['labels_dir'] or values['reference_topic'],
                'raw_topic': values['raw_topic'], 'restored_topic': values['restored_topic'],
                'reference_conf': values['reference_conf']}
        if not pairing['paired']:
            # Rows of zeros would read as a detector that finds nothing.
            meta['accuracy'] = 'not scored: no frame had its reference (labels or clean frame)'
            results = {}
        files = write_report(values['report_dir'], results,
                             title='Detection before/after restoration (ROS graph)', meta=meta,
                             latency_ms=latency, extra={'pairing': pairing},
                             plots=values['plots'],
                             agreement=None if agreement is None else {'restored': agreement})
        return files['json'], results, pairing, latency, agreement

    def _on_trigger(self, request, response):
        try:
            path, results, pairing, latency, agreement = self.write()
        except Exception as exc:  # noqa: BLE001 - report the failure to the caller
            response.success = False
            response.message = f'cannot write the report: {exc!r}'
            return response
        summary = {row: {k: round(r[k], 4) for k in ('precision', 'recall', 'mAP50',
                                                       'mAP50-95')} | {'images': r['images']}
                   for row, r in results.items()}
        summary['latency_ms'] = {row: latency_summary(v) for row, v in latency.items()}
        message = {'report': str(path), 'pairing': pairing, 'results': summary}
        if agreement is not None:
            message['agreement'] = {k: v for k, v in agreement.items() if k != 'per_class'}
        response.success = True
        response.message = json.dumps(message)
        return response

    def close(self):
        if self.params['report_on_shutdown']:
            try:
                path = self.write()[0]
                print(f'metrics_node: report written to {path}', flush=True)
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                print(f'metrics_node: cannot write the report: {exc!r}', file=sys.stderr)


def _check_streams(values):
    if not (values['labels_dir'] or values['reference_topic'] or values['restored_topic']):
        return ('nothing to score: set restored_topic (raw vs restored agreement), or a '
                'reference (reference_topic or labels_dir) for accuracy')
    return None


def main(args=None):
    return run_node(MetricsNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
