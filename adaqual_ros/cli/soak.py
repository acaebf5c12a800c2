"""
`adaqual soak`: a long run of the restoration node with accounting, memory and thread figures.

    adaqual soak --frames 10000 --out runs/soak

writes runs/soak/soak.json ("frames_in", "published", "passed_through", "dropped",
"memory_growth_mb", "fps", and more) and runs/soak/node.log. Exits 1 when a frame is unaccounted
for, published twice or published with a wrong header; the memory target is reported.
"""
import sys

MEMORY_TARGET_MB = 50.0


def add_arguments(parser):
    parser.add_argument('--frames', type=int, default=10000, help='frames to publish')
    parser.add_argument('--out', required=True, help='output folder for soak.json and node.log')
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--backend', default='classical',
                        help='restoration backend of the node (adaqual|classical|passthrough)')
    parser.add_argument('--quality-backend', default='classical',
                        help='quality estimator of the node (learned|classical|deqa)')
    parser.add_argument('--source', default=None,
                        help='video to take frames from (default: assets highway dashcam)')
    parser.add_argument('--warmup', type=int, default=500,
                        help='frames before the memory baseline is taken')
    parser.add_argument('--frame-timeout', type=float, default=2.0,
                        help='seconds to wait for each restored frame')
    parser.add_argument('--domain-id', type=int, default=None, help='ROS_DOMAIN_ID to use')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra node parameter (repeatable)')


def run(args):
    try:
        from adaqual_ros.ros.soak import run_soak
    except ImportError as exc:
        print(f'adaqual soak needs rclpy and the ROS 2 message packages: {exc}')
        return 2
    try:
        report = run_soak(args.frames, args.out, width=args.width, height=args.height,
                          backend=args.backend, quality_backend=args.quality_backend,
                          source=args.source, warmup=args.warmup,
                          frame_timeout=args.frame_timeout, domain_id=args.domain_id,
                          node_params=args.param)
    except ValueError as exc:  # frames, frame size or domain id out of range
        print(f'adaqual soak: {exc}', file=sys.stderr)
        return 2
    growth = report['memory_growth_mb']
    print(f"soak: {report['frames']} sent, {report['frames_in']} in, {report['published']} "
          f"published, {report['passed_through']} passed through, {report['dropped']} dropped "
          f"{report['dropped_by_reason']}; {report['fps']:.1f} frames/s; memory growth "
          f"{growth if growth is None else round(growth, 1)} MB after {report['warmup_frames']}"
          f" frames (target < {MEMORY_TARGET_MB:.0f}); threads max {report['threads_max']}")
    print(f'soak: {args.out}/soak.json')
    broken = (not report['accounted'] or report['duplicates'] or report['header_mismatches']
              or report['node_exit_code'] not in (0, None))
    if broken:
        print('soak: FAILED: frames unaccounted for, duplicated or with wrong headers, or the '
              'node did not exit cleanly')
        return 1
    return 0
