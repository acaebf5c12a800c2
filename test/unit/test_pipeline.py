"""AdaQualPipeline: save/load round trip, seeds, batching, scheduler settings, input checks."""
import numpy as np
import pytest
import torch

from adaqual_ros.pipelines import AdaQualPipeline, default_pipeline_path, neutral_quality_map
from adaqual_ros.prompting import empty_prompts
from adaqual_ros.quality.types import QualityMap


def _maps(b, h, w, cell=64, seed=0):
    rng = np.random.default_rng(seed)
    gh, gw = -(-h // cell), -(-w // cell)
    return [QualityMap(rng.uniform(1, 5, (gh, gw)), rng.dirichlet(np.ones(4), (gh, gw)), cell,
                       (h, w)) for _ in range(b)]


@pytest.fixture(scope='module')
def pipe():
    """Tiny pipeline with randomised zero-init pieces, so outputs depend on everything."""
    torch.manual_seed(0)
    p = AdaQualPipeline.from_components_config('tiny')
    with torch.no_grad():
        for name, param in p.unet.named_parameters():
            if name.startswith('ending') or name.endswith(('beta', 'gamma')):
                param.normal_(0, 0.1)
    p.unet.eval()
    p.text_encoder.eval()
    return p


def _run(pipe, image, maps, seed=0, **kw):
    return pipe(image, maps, generator=torch.Generator().manual_seed(seed), **kw)


def test_scheduler_is_trailing_sample_prediction(pipe):
    cfg = pipe.scheduler.config
    assert cfg.prediction_type == 'sample' and cfg.num_train_timesteps == 1000
    pipe.scheduler.set_timesteps(2)
    assert pipe.scheduler.timesteps.tolist() == [999, 499]


def test_untrained_pipeline_returns_its_input():
    torch.manual_seed(0)
    p = AdaQualPipeline.from_components_config('tiny')
    image = torch.rand(1, 3, 50, 70)
    out = _run(p, image, _maps(1, 50, 70))
    assert torch.equal(out.images, image)


def test_fixed_seed_gives_identical_output(pipe):
    image = torch.rand(2, 3, 70, 100)
    maps = _maps(2, 70, 100)
    a, b = _run(pipe, image, maps, 3), _run(pipe, image, maps, 3)
    c = _run(pipe, image, maps, 4)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == image.shape and 0 <= a.images.min() and a.images.max() <= 1
    assert a.prompts[0].global_prompt and len(a.quality_maps) == 2


def test_save_load_round_trip_is_exact(pipe, tmp_path):
    image = torch.rand(1, 3, 64, 96)
    maps = _maps(1, 64, 96)
    before = _run(pipe, image, maps).images
    pipe.save_pretrained(tmp_path)
    loaded = AdaQualPipeline.from_pretrained(tmp_path)
    assert torch.equal(_run(loaded, image, maps).images, before)
    assert loaded.config.cell == pipe.config.cell
    assert loaded.unet.config.width == pipe.unet.config.width


def test_prompts_and_quality_change_the_restoration(pipe):
    image = torch.rand(1, 3, 64, 128)
    maps = _maps(1, 64, 128, seed=5)
    base = _run(pipe, image, maps)
    no_prompts = _run(pipe, image, maps, prompts=[empty_prompts(base.prompts[0])])
    flat = _run(pipe, image, [neutral_quality_map(maps[0])], prompts=base.prompts)
    # dropped prompts or an unused quality map would make these exactly equal
    assert (base.images - no_prompts.images).abs().mean() > 1e-6
    assert (base.images - flat.images).abs().mean() > 1e-6


def test_precomputed_prompt_embeddings_give_the_same_output(pipe):
    image = torch.rand(1, 3, 64, 128)
    maps = _maps(1, 64, 128, seed=6)
    base = _run(pipe, image, maps)
    embeds = pipe.encode_prompts(base.prompts)
    again = _run(pipe, image, maps, prompts=base.prompts, prompt_embeds=embeds)
    assert torch.equal(base.images, again.images)
    other = pipe.encode_prompts([empty_prompts(base.prompts[0])])
    # the embeddings are what the network reads: other embeddings, other output
    assert not torch.equal(base.images, _run(pipe, image, maps, prompts=base.prompts,
                                             prompt_embeds=other).images)


def test_batch_equals_singles_and_tuple_output(pipe):
    image = torch.rand(2, 3, 64, 64)
    maps = _maps(2, 64, 64, seed=1)
    noise = torch.randn(2, 3, 64, 64)
    batch = pipe(image, maps, latents=noise).images
    for i in range(2):
        single = pipe(image[i:i + 1], maps[i:i + 1], latents=noise[i:i + 1]).images
        assert torch.allclose(single, batch[i:i + 1], atol=1e-5)
    images, qmaps, prompts = pipe(image, maps, latents=noise, return_dict=False)
    assert torch.equal(images, batch) and len(prompts) == 2


def test_step_counts(pipe):
    image = torch.rand(1, 3, 64, 64)
    maps = _maps(1, 64, 64)
    outs = [_run(pipe, image, maps, num_inference_steps=n).images for n in (1, 2, 4)]
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    with pytest.raises(ValueError, match='num_inference_steps'):
        _run(pipe, image, maps, num_inference_steps=0)


def test_residual_guide_smooths_only_the_predicted_change(pipe):
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    maps = _maps(1, 64, 96)
    plain, off = _run(pipe, image, maps), _run(pipe, image, maps, residual_guide=0)
    guided = _run(pipe, image, maps, residual_guide=8)
    assert torch.equal(plain.images, off.images)
    assert not torch.equal(plain.images, guided.images)
    assert 0 <= guided.images.min() and guided.images.max() <= 1

    def roughness(out):
        d = out.images - image
        return (d[..., 1:, :] - d[..., :-1, :]).abs().mean()
    assert roughness(guided) < roughness(plain)


def test_input_checks(pipe, tmp_path):
    with pytest.raises(ValueError, match='B, 3, H, W'):
        pipe(torch.rand(3, 64, 64), _maps(1, 64, 64))
    with pytest.raises(ValueError, match='quality map'):
        pipe(torch.rand(1, 3, 64, 64), _maps(1, 32, 64))
    with pytest.raises(ValueError, match='quality maps for a batch'):
        pipe(torch.rand(2, 3, 64, 64), _maps(1, 64, 64))
    with pytest.raises(FileNotFoundError, match='model_index.json'):
        AdaQualPipeline.from_pretrained(tmp_path / 'nothing')


def test_shipped_checkpoint_restores_real_synthetic_weather(asset):
    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped checkpoint yet')
    import cv2

    from adaqual_ros.metrics.image import psnr
    from adaqual_ros.weather import synthesize
    torch.set_num_threads(1)
    pipe = AdaQualPipeline.from_pretrained()
    bgr = cv2.imread(str(asset('data/clean/bsds500/val/102061.jpg')))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])[:192, :256]
    gains = []
    for condition in ('haze', 'low_rain'):
        s = synthesize(rgb, condition, 11, severity=0.6)
        qmap = QualityMap(s.quality, s.types, 64, rgb.shape[:2])
        x = torch.from_numpy(s.degraded).permute(2, 0, 1)[None].float() / 255
        out = _run(pipe, x, [qmap]).images[0].permute(1, 2, 0).numpy()
        restored = (out * 255).round().astype(np.uint8)
        gains.append(psnr(restored, s.clean) - psnr(s.degraded, s.clean))
    assert min(gains) > 1.0, gains


@pytest.mark.slow
def test_eval_restore_writes_the_contract_json(assets, tmp_path):
    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped checkpoint yet')
    import json

    from adaqual_ros.cli.main import main
    rc = main(['eval-restore', '--out', str(tmp_path), '--assets', str(assets), '--limit', '2',
               '--images', '1', '--estimator', 'classical'])
    assert rc == 0
    report = json.loads((tmp_path / 'restore.json').read_text())
    for method in ('input', 'classical', 'adaqual'):
        for dataset in ('synthetic', 'rain100l', 'raindrop'):
            entry = report['results'][method][dataset]
            assert entry['n'] == 2 and np.isfinite(entry['psnr']) and 0 < entry['ssim'] <= 1
    abl = report['ablations']['synthetic']
    for key in ('prompts_empty', 'prompts_shuffled', 'quality_off', 'gt_scores', 'gt_types',
                'steps_1', 'steps_4'):
        assert abl[key]['n'] == 2
    assert (tmp_path / 'restore.md').read_text().startswith('# Restoration quality')
    # another clean folder for the synthetic set, no real pairs: a checkpoint-selection run
    rc = main(['eval-restore', '--out', str(tmp_path / 'sel'), '--assets', str(assets),
               '--limit', '2', '--images', '1', '--estimator', 'classical', '--no-ablations',
               '--clean-dir', 'data/clean/bsds500/test', '--no-real'])
    assert rc == 0
    report = json.loads((tmp_path / 'sel' / 'restore.json').read_text())
    assert set(report['results']['adaqual']) == {'synthetic'}
    assert report['settings']['heldout'].endswith('heldout_bsds500_test_n1_s0')
    manifest = json.loads((tmp_path / 'sel' / 'heldout_bsds500_test_n1_s0' / 'manifest.json')
                          .read_text())
    assert manifest['source_dir'] == 'test'  # the folder's name


def test_eval_restore_noise_seeds_repeat_the_adaqual_rows(assets, tmp_path):
    """Seed 0 of a two-seed run is the one-seed run; the tables give the mean over seeds."""
    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped checkpoint yet')
    import json

    from adaqual_ros.cli.main import main
    common = ['--assets', str(assets), '--limit', '1', '--images', '1', '--estimator',
              'classical', '--no-real', '--clean-dir', 'data/clean/bsds500/test']
    assert main(['eval-restore', '--out', str(tmp_path / 'one'), *common]) == 0
    assert main(['eval-restore', '--out', str(tmp_path / 'two'), '--noise-seeds', '2',
                 *common]) == 0
    one = json.loads((tmp_path / 'one' / 'restore.json').read_text())
    two = json.loads((tmp_path / 'two' / 'restore.json').read_text())
    assert two['settings']['noise_seeds'] == [0, 1]
    spread = two['noise']['psnr']['adaqual/synthetic']
    assert spread['per_seed'][0] == pytest.approx(one['results']['adaqual']['synthetic']['psnr'],
                                                  abs=1e-3)
    assert spread['per_seed'][0] != spread['per_seed'][1]  # the start noise matters
    assert two['results']['adaqual']['synthetic']['psnr'] == pytest.approx(
        np.mean(spread['per_seed']), abs=2e-3)
    # deterministic rows are scored once, whatever the number of seeds; n counts frames
    assert two['results']['input'] == one['results']['input']
    assert two['results']['adaqual']['synthetic']['n'] == 1
    assert two['ablations']['synthetic']['steps_4']['n'] == 1
    costs = two['noise']['psnr_cost_db']
    for name in ('prompts_empty', 'prompts_shuffled', 'quality_off'):
        assert len(costs[name]['per_seed']) == 2
        assert costs[name]['mean'] == pytest.approx(
            two['ablations']['psnr_cost_db'][name], abs=2e-3)
    assert '## Start-noise spread (2 seeds: 0, 1)' in (tmp_path / 'two' / 'restore.md').read_text()
    # The estimator's map next to the synthesis' on the frame scored (--limit 1: the first),
    # once, not once per seed; the truth side is the held-out set's own map.
    from adaqual_ros.training.datasets import HeldoutSet
    truth = HeldoutSet(two['settings']['heldout'])[0]
    qm = two['quality_map']
    assert qm == one['quality_map']
    assert qm['cells'] == truth['quality'].numel()
    for k, name in enumerate(('low_light', 'haze', 'rain', 'snow')):
        entry = qm['type_strength'][name]
        assert entry['true_mean'] == pytest.approx(float(truth['types'][..., k].mean()), abs=1e-5)
        assert 0.0 <= entry['pred_mean'] <= 1.0
    assert 'Estimated vs synthesised quality map' in (tmp_path / 'two' / 'restore.md').read_text()


def test_eval_restore_can_score_the_frames_the_node_delivers(assets, tmp_path, capsys):
    """--skip-threshold puts the runtime's skip on the AdaQual rows (default: every cell)."""
    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped checkpoint yet')
    import json

    from adaqual_ros.cli.main import main
    common = ['--assets', str(assets), '--limit', '2', '--images', '1', '--estimator',
              'classical', '--no-real', '--no-ablations', '--clean-dir', 'data/clean/bsds500/test']
    runs = {}
    for name, extra in (('every', []), ('none', ['--skip-threshold', '1.0']),
                        ('all', ['--skip-threshold', '5.01', '--skip-margin', '1'])):
        assert main(['eval-restore', '--out', str(tmp_path / name), *common, *extra]) == 0
        runs[name] = json.loads((tmp_path / name / 'restore.json').read_text())
    # Every cell at or above 1.0 passes through: the AdaQual rows are the input itself ...
    assert runs['none']['results']['adaqual'] == runs['none']['results']['input']
    assert runs['none']['results']['adaqual_gt_quality'] == runs['none']['results']['input']
    # ... and when no cell passes through they are the checkpoint's own figures.
    assert runs['all']['results']['adaqual'] == runs['every']['results']['adaqual']
    assert runs['every']['results']['adaqual'] != runs['every']['results']['input']
    settings = {name: run['settings'] for name, run in runs.items()}
    assert (settings['none']['skip_threshold'], settings['every']['skip_threshold'],
            settings['all']['skip_margin']) == (1.0, None, 1)
    capsys.readouterr()
    assert main(['eval-restore', '--out', str(tmp_path / 'bad'), *common, '--skip-threshold',
                 '4', '--skip-margin', '9']) == 2
    assert 'skip_margin must be in [0, 8]' in capsys.readouterr().err
    assert main(['eval-restore', '--out', str(tmp_path / 'bad'), *common, '--skip-margin',
                 '1']) == 2
    assert '--skip-margin needs --skip-threshold' in capsys.readouterr().err
    assert main(['eval-restore', '--out', str(tmp_path / 'bad'), *common, '--whole-frame-share',
                 '0.5']) == 2
    assert '--whole-frame-share needs --skip-threshold' in capsys.readouterr().err
    assert main(['eval-restore', '--out', str(tmp_path / 'bad'), *common, '--skip-threshold',
                 '4', '--whole-frame-share', '0']) == 2
    assert 'whole_frame_share must be in (0, 1]' in capsys.readouterr().err


def test_skip_as_runtime_keeps_clean_cells_and_ramps_into_degraded_ones():
    from adaqual_ros.cli.eval_restore import _skip_as_runtime
    from adaqual_ros.quality.types import QualityMap

    degraded = np.full((64, 192, 3), 40, np.uint8)
    restored = np.full((64, 192, 3), 200, np.uint8)
    qmap = QualityMap(np.array([[5.0, 2.0, 2.0]]), np.zeros((1, 3, 4)), 64, (64, 192))
    out = _skip_as_runtime(degraded, restored, qmap, 4.0, 0, 1.0)
    assert np.array_equal(out[:, :64], degraded[:, :64])  # the clean cell, bit-identical
    assert np.array_equal(out[:, 100:], restored[:, 100:])  # deep in the degraded cells
    assert 40 < out[0, 66, 0] < 200  # the soft border
    grown = _skip_as_runtime(degraded, restored, qmap, 4.0, 1, 1.0)  # the margin takes all
    assert np.array_equal(grown, restored)
    whole = _skip_as_runtime(degraded, restored, qmap, 4.0, 0, 0.6)  # 2 of 3 cells degraded
    assert np.array_equal(whole, restored)
    assert np.array_equal(_skip_as_runtime(degraded, restored, qmap, 4.0, 0, 0.7), out)


def test_eval_restore_on_frames_of_a_clean_video(assets, tmp_path, capsys):
    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped checkpoint yet')
    import json

    import cv2

    from adaqual_ros.cli.main import main
    video = assets / 'data' / 'video' / 'people.mp4'
    if not video.is_file():
        pytest.skip('people.mp4 not in the assets')
    out = tmp_path / 'vid'
    assert main(['eval-restore', '--out', str(out), '--assets', str(assets), '--clean-video',
                 'data/video/people.mp4', '--video-stride', '150', '--video-width', '320',
                 '--images', '2', '--limit', '1', '--no-real', '--no-ablations',
                 '--estimator', 'classical']) == 0
    frames = sorted((out / 'frames_people_s150_w320').glob('*.png'))
    n_video = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert len(frames) == -(-n_video // 150)
    assert [cv2.imread(str(f)).shape[1] for f in frames] == [320] * len(frames)
    report = json.loads((out / 'restore.json').read_text())
    assert report['settings']['clean_video'] == 'data/video/people.mp4'
    assert report['settings']['heldout'].endswith('heldout_frames_people_s150_w320_n2_s0')
    assert report['results']['adaqual']['synthetic']['n'] == 1
    capsys.readouterr()
    for bad, reason in [(['--clean-dir', 'data/clean/bsds500/test'], 'not both'),
                        (['--video-stride', '0'], '--video-stride must be >= 1'),
                        (['--noise-seeds', '0'], '--noise-seeds must be at least 1')]:
        assert main(['eval-restore', '--out', str(out), '--assets', str(assets),
                     '--clean-video', 'data/video/people.mp4', *bad]) == 2
        assert reason in capsys.readouterr().err


def test_an_eager_pipeline_leaves_the_cuda_graph_machinery_alone():
    # Marking CUDA-graph steps is for a compiled network; in an eager one its first call would
    # import inductor's CUDA-graph module (~0.5 s on a robot's first frame). A fresh process:
    # other tests compile.
    import subprocess
    import sys

    code = ('import sys, torch\n'
            'from adaqual_ros.pipelines import AdaQualPipeline\n'
            "pipe = AdaQualPipeline.from_components_config('tiny')\n"
            'from adaqual_ros.quality.types import QualityMap\n'
            'import numpy as np\n'
            'q = QualityMap(np.full((1, 1), 2.0), np.zeros((1, 1, 4)), 64, (32, 32))\n'
            'pipe(torch.rand(1, 3, 32, 32), [q], num_inference_steps=2)\n'
            "print('torch._inductor.cudagraph_trees' in sys.modules)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == 'False'
