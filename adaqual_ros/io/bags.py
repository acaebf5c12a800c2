"""
Read and write ROS 2 MCAP bags of camera images without ROS (mcap + mcap-ros2-support).

Supported: sensor_msgs/msg/Image (any encoding adaqual_ros.io.codec decodes),
sensor_msgs/msg/CompressedImage (jpeg/png) and, for writing, sensor_msgs/msg/CameraInfo.
`read_images` gives HxWx3 uint8 RGB (mono is expanded, 16-bit is scaled), converted by the
codec; `rewrite_bag` copies a whole bag (any message type, unchanged) and adds a processed copy
of one image topic, in the image's own encoding (`adaqual restore`).
"""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adaqual_ros.io import codec

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
STRING_TYPE = 'std_msgs/msg/String'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

_SEP = '=' * 80 + '\n'
_HEADER = (
    'MSG: std_msgs/Header\n'
    'builtin_interfaces/Time stamp\n'
    'string frame_id\n'
    + _SEP
    + 'MSG: builtin_interfaces/Time\n'
    'int32 sec\n'
    'uint32 nanosec\n'
)
# ROS 2 message definitions in the concatenated form rosbag2 stores in MCAP schemas.
MSGDEFS = {
    IMAGE_TYPE: (
        'std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n'
        'uint8 is_bigendian\nuint32 step\nuint8[] data\n' + _SEP + _HEADER),
    COMPRESSED_TYPE: (
        'std_msgs/Header header\nstring format\nuint8[] data\n' + _SEP + _HEADER),
    CAMERA_INFO_TYPE: (
        'std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\n'
        'float64[] d\nfloat64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\n'
        'uint32 binning_y\nsensor_msgs/RegionOfInterest roi\n' + _SEP
        + 'MSG: sensor_msgs/RegionOfInterest\nuint32 x_offset\nuint32 y_offset\nuint32 height\n'
        'uint32 width\nbool do_rectify\n' + _SEP + _HEADER),
    STRING_TYPE: 'string data\n',
}


class BagError(ValueError):
    """A bag is missing, unreadable, or lacks the requested image topic."""


@dataclass
class BagImage:
    """
    One image read from a bag.

    Args:
        topic (`str`): the topic it was recorded on.
        stamp_ns (`int`): header stamp in nanoseconds.
        frame_id (`str`): header frame_id.
        image (`np.ndarray` HxWx3 uint8): RGB pixels.
        encoding (`str`): the message's encoding (or CompressedImage format).
        log_time_ns (`int`): MCAP log time.
        index (`int`): position among the images read from this topic.
    """

    topic: str
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    encoding: str
    log_time_ns: int
    index: int


def _header(stamp_ns, frame_id):
    stamp_ns = int(stamp_ns)
    return {'stamp': {'sec': stamp_ns // 1_000_000_000, 'nanosec': stamp_ns % 1_000_000_000},
            'frame_id': str(frame_id)}


def _stamp_ns(header):
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def camera_info_dict(height, width, stamp_ns, frame_id, fx=None):
    """A plain pinhole CameraInfo (no distortion, principal point at the centre)."""
    f = float(fx or max(height, width))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return {
        'header': _header(stamp_ns, frame_id), 'height': int(height), 'width': int(width),
        'distortion_model': 'plumb_bob', 'd': [0.0] * 5,
        'k': [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0],
        'r': [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        'p': [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        'binning_x': 0, 'binning_y': 0,
        'roi': {'x_offset': 0, 'y_offset': 0, 'height': 0, 'width': 0, 'do_rectify': False},
    }


class BagWriter:
    """
    Write images to a ROS 2 MCAP bag (a single .mcap file).

    Args:
        path (`str` or `Path`): output file (parent folders are created).

    Example:
        >>> with BagWriter('cam.mcap') as bag:
        ...     bag.write_image('image_raw', rgb, stamp_ns=10**9, frame_id='camera')
    """

    def __init__(self, path):
        from mcap_ros2.writer import Writer

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, 'wb')
        self._writer = Writer(self._file)
        self._schemas = {}
        self._seq = {}
        self._copied_schemas = {}
        self._copied_channels = {}
        self.count = 0

    def _schema(self, datatype):
        if datatype not in self._schemas:
            self._schemas[datatype] = self._writer.register_msgdef(datatype, MSGDEFS[datatype])
        return self._schemas[datatype]

    def _write(self, topic, datatype, message, stamp_ns, log_time_ns=None):
        seq = self._seq.get(topic, 0)
        log_time = int(stamp_ns if log_time_ns is None else log_time_ns)
        self._writer.write_message(topic, self._schema(datatype), message,
                                   log_time=log_time, publish_time=log_time, sequence=seq)
        self._seq[topic] = seq + 1
        self.count += 1

    def write_image(self, topic, image, stamp_ns, frame_id='camera', encoding='rgb8',
                    log_time_ns=None):
        """Write a sensor_msgs/Image; `image` is laid out as `encoding` says (RGB for rgb8).
        The log time is the stamp unless ``log_time_ns`` is given."""
        fields = codec.encode_image(np.ascontiguousarray(image), encoding)
        fields['data'] = bytes(fields['data'])
        self._write(topic, IMAGE_TYPE, {'header': _header(stamp_ns, frame_id), **fields},
                    stamp_ns, log_time_ns)

    def write_compressed(self, topic, rgb, stamp_ns, frame_id='camera', fmt='jpeg',
                         quality=95):
        """Write a sensor_msgs/CompressedImage of an HxWx3 uint8 RGB image."""
        data, fmt_text = codec.encode_compressed(np.ascontiguousarray(rgb), 'rgb8', fmt, quality)
        self._write(topic, COMPRESSED_TYPE, {'header': _header(stamp_ns, frame_id),
                                             'format': fmt_text, 'data': data}, stamp_ns)

    def write_string(self, topic, text, stamp_ns, log_time_ns=None):
        """Write a std_msgs/String (the node's JSON topics); log time as in `write_image`."""
        self._write(topic, STRING_TYPE, {'data': str(text)}, stamp_ns, log_time_ns)

    def copy(self, schema, channel, message, topic=None):
        """
        Write a message read from another MCAP file as it is (bytes, times, sequence), under its
        own schema and channel, or on ``topic`` instead of the channel's.
        """
        # mcap-ros2-support has no raw-message API: its Writer's MCAP writer takes the record.
        raw = self._writer._writer
        key = None if schema is None else (schema.name, schema.encoding, bytes(schema.data))
        if key not in self._copied_schemas:
            self._copied_schemas[key] = 0 if schema is None else raw.register_schema(
                schema.name, schema.encoding, schema.data)
        topic = channel.topic if topic is None else topic
        if topic not in self._copied_channels:
            self._copied_channels[topic] = raw.register_channel(
                topic, channel.message_encoding, self._copied_schemas[key],
                dict(channel.metadata or {}))
        raw.add_message(self._copied_channels[topic], message.log_time, message.data,
                        message.publish_time, message.sequence)
        self.count += 1

    def write_camera_info(self, topic, height, width, stamp_ns, frame_id='camera'):
        self._write(topic, CAMERA_INFO_TYPE, camera_info_dict(height, width, stamp_ns, frame_id),
                    stamp_ns)

    def close(self):
        if self._file is not None:
            self._writer.finish()
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def list_topics(path):
    """Return {topic: {'type': schema name, 'count': messages}} of an MCAP file."""
    from mcap.reader import make_reader

    path = Path(path)
    if not path.is_file():
        raise BagError(f'bag {str(path)!r} does not exist (give the .mcap file)')
    with open(path, 'rb') as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        if summary is None:
            raise BagError(f'{str(path)!r} has no MCAP summary (unfinished or not an MCAP file)')
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        out = {}
        for cid, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            out[channel.topic] = {'type': schema.name if schema else '',
                                  'count': int(counts.get(cid, 0))}
    return out


def resolve_bag_path(path):
    """Accept a .mcap file or a rosbag2 folder holding exactly one .mcap file."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob('*.mcap'))
        if len(files) != 1:
            raise BagError(f'bag folder {str(path)!r} holds {len(files)} .mcap files; '
                           'give the file')
        return files[0]
    if not path.is_file():
        raise BagError(f'bag {str(path)!r} does not exist')
    return path


def image_topics(path):
    """Image topics of a bag (Image or CompressedImage), sorted."""
    return sorted(t for t, info in list_topics(path).items() if info['type'] in IMAGE_TYPES)


def _to_rgb8(message, datatype):
    if datatype == COMPRESSED_TYPE:
        array, encoding = codec.decode_compressed(bytes(message.data), message.format)
    else:
        array, encoding = _decode_raw(message)
    rgb, layout = codec.to_rgb(array, encoding)
    if layout == 'mono':
        if rgb.dtype != np.uint8:
            rgb = cv2.normalize(rgb.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
        rgb = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_GRAY2RGB)
    elif rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    return np.ascontiguousarray(rgb), encoding


def _image_topic(path, topic, topics):
    """The image topic of the bag to use: ``topic`` (with or without its leading slash), or
    the bag's only image topic when None."""
    candidates = [t for t, info in topics.items() if info['type'] in IMAGE_TYPES]
    if topic is None:
        if len(candidates) != 1:
            raise BagError(f'{path.name} has image topics {candidates}; choose one with topic=')
        return candidates[0]
    if topic not in topics:
        alt = topic[1:] if topic.startswith('/') else '/' + topic
        if alt not in topics:
            raise BagError(f'topic {topic!r} is not in {path.name}; image topics: {candidates}')
        topic = alt
    if topics[topic]['type'] not in IMAGE_TYPES:
        raise BagError(f'topic {topic!r} has type {topics[topic]["type"]}, not an image type')
    return topic


def read_images(path, topic=None, limit=None):
    """
    Yield `BagImage`s (RGB uint8) from one image topic of an MCAP bag, in log-time order.

    Args:
        path (`str` or `Path`): .mcap file or a rosbag2 folder with one .mcap file.
        topic (`str`, *optional*): image topic; may be omitted when the bag has exactly one.
        limit (`int`, *optional*): stop after this many images.
    """
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = resolve_bag_path(path)
    topic = _image_topic(path, topic, list_topics(path))
    with open(path, 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for index, (schema, _, message, decoded) in enumerate(
                reader.iter_decoded_messages(topics=[topic], log_time_order=True)):
            if limit is not None and index >= limit:
                break
            rgb, encoding = _to_rgb8(decoded, schema.name)
            yield BagImage(topic, _stamp_ns(decoded.header), decoded.header.frame_id, rgb,
                           encoding, int(message.log_time), index)


def restored_topic(topic):
    """
    Where the restoration node would publish a camera's restored frames: '/cam/image_raw' and
    '/cam/image_raw/compressed' -> '/cam/restored/image_raw' (always a raw Image, as the node
    answers compressed input); any other name likewise ('/cam/rgb' -> '/cam/restored/rgb').
    """
    base = topic[:-len('/compressed')] if topic.endswith('/compressed') else topic
    namespace, _, name = base.rpartition('/')
    return f'{namespace}/restored/{name}'


def _camera_info_topic(topic):
    base = topic[:-len('/compressed')] if topic.endswith('/compressed') else topic
    return base.rpartition('/')[0] + '/camera_info'


def rewrite_bag(src, dst, process, topic=None, out_topic=None, limit=None, on_image=None,
                extra_topics=()):
    """
    Copy a bag and add a processed copy of one image topic, the way the restoration node adds
    its output to a camera's topics.

    Every message of ``src`` goes to ``dst`` unchanged (bytes, schema, channel, times). After each
    image on ``topic`` (the first ``limit`` of them; None: all), ``process(frame, stamp_ns,
    frame_id)`` gets the frame as `codec.frame_for_processing` gives it (RGB, RGBA or a plane) and
    returns one of the same shape and dtype, which is written as a sensor_msgs/Image on
    ``out_topic`` (default `restored_topic`) with the image's header and log time, in the encoding
    the image was recorded in (a CompressedImage's original encoding, as the node does). Messages
    of the camera's camera_info (the topic beside the image topic) are copied to ``<out
    namespace>/camera_info`` too. An image that cannot be decoded, or that ``process`` refuses with
    a ValueError, is not written and is counted.

    Args:
        on_image (`callable`, *optional*): called after each image with (index, total).
        extra_topics (`tuple[str]`): names, relative to the camera's namespace (the image
            topic's), of more messages per frame (the node's 'quality_map' and 'prompts'):
            ``process`` then returns ``(frame, {name: value})``, where a value ``(array,
            encoding)`` is written as an Image with the frame's header and a str as a
            std_msgs/String, both at the frame's log time.

    Returns:
        `dict`: 'topic', 'out_topic', 'extra_topics', 'images' (processed and written),
        'failed' ([(index, reason)]), 'copied' (messages of ``src``, each copied unchanged).

    Raises:
        BagError: no such bag or topic, or ``out_topic`` already in the bag.
    """
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    src = resolve_bag_path(src)
    topics = list_topics(src)
    topic = _image_topic(src, topic, topics)
    out_topic = out_topic or restored_topic(topic)
    info_in = _camera_info_topic(topic)
    info_out = out_topic.rpartition('/')[0] + '/camera_info'
    camera = info_in.rpartition('/')[0]
    extras = {name: f'{camera}/{name}' for name in extra_topics}
    for name in (out_topic, info_out if info_in in topics else None, *extras.values()):
        if name in topics:
            raise BagError(f'{src.name} already has a topic {name!r} (restored before?); '
                           'choose another output topic')
    total = topics[topic]['count'] if limit is None else min(limit, topics[topic]['count'])
    report = {'topic': topic, 'out_topic': out_topic, 'extra_topics': list(extras.values()),
              'images': 0, 'failed': [], 'copied': 0}
    decoder = DecoderFactory()
    decoders = {}
    index = 0
    with open(src, 'rb') as f, BagWriter(dst) as out:
        for schema, channel, message in make_reader(f).iter_messages(log_time_order=True):
            out.copy(schema, channel, message)
            report['copied'] += 1
            if channel.topic == info_in:
                out.copy(schema, channel, message, topic=info_out)
            if channel.topic != topic or (limit is not None and index >= limit):
                continue
            if schema.id not in decoders:
                decoders[schema.id] = decoder.decoder_for(channel.message_encoding, schema)
            try:
                decoded = decoders[schema.id](message.data)
                frame, target = _frame_of(decoded, schema.name)
            except Exception as exc:  # noqa: BLE001 - a broken message is counted, not fatal
                report['failed'].append((index, f'cannot decode: {exc}'))
            else:
                stamp, frame_id = _stamp_ns(decoded.header), decoded.header.frame_id
                try:
                    result = process(frame, stamp, frame_id)
                    result, more = result if extras else (result, {})
                    image = codec.frame_to_encoding(result, target)
                except ValueError as exc:  # a frame the process refuses
                    report['failed'].append((index, str(exc)))
                else:
                    out.write_image(out_topic, image, stamp, frame_id, encoding=target,
                                    log_time_ns=message.log_time)
                    for name, value in more.items():
                        if isinstance(value, str):
                            out.write_string(extras[name], value, stamp,
                                             log_time_ns=message.log_time)
                        else:
                            array, encoding = value
                            out.write_image(extras[name], array, stamp, frame_id,
                                            encoding=encoding, log_time_ns=message.log_time)
                    report['images'] += 1
            index += 1
            if on_image is not None:
                on_image(index, total)
    return report


def _frame_of(message, datatype):
    """(frame for processing, encoding to write it back in) of a decoded image message."""
    if datatype == COMPRESSED_TYPE:
        frame, tag = codec.compressed_for_processing(bytes(message.data), message.format,
                                                     keep_alpha=True)
        return frame, tag.partition(':')[2]
    array, encoding = _decode_raw(message)
    return codec.frame_for_processing(array, encoding, keep_alpha=True), encoding


def _decode_raw(message):
    """(array in its own layout, encoding) of a decoded sensor_msgs/Image."""
    return codec.decode_image(message.encoding, message.height, message.width, message.step,
                              bytes(message.data), bool(message.is_bigendian))
