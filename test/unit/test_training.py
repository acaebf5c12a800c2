"""Losses and the trainer: terms, SSIM against scikit-image, loss goes down, resumable runs."""
import json

import numpy as np
import pytest
import torch

from adaqual_ros.training.losses import (
    LossWeights,
    adaqual_loss,
    quality_loss,
    quality_weights,
    ssim_torch,
)
from adaqual_ros.training.train import (
    SyntheticCrops,
    _collate,
    check_gradients,
    estimator_conditioning,
    list_images,
    merge_config,
    sampler_last_input,
    train,
    training_loss,
)


def test_quality_weights_and_weighted_loss():
    scores = torch.tensor([5.0, 3.0, 1.0]).view(1, 1, 1, 3)
    w = quality_weights(scores, a=2.0)
    assert w.flatten().tolist() == [1.0, 2.0, 3.0]
    clean = torch.zeros(1, 3, 1, 3)
    err_bad = clean.clone()
    err_bad[..., 2] = 0.5  # error in the worst region
    err_good = clean.clone()
    err_good[..., 0] = 0.5  # same error in the pristine region
    assert quality_loss(err_bad, clean, w) > quality_loss(err_good, clean, w)
    with pytest.raises(ValueError, match='l2'):
        LossWeights(l2=-1)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((48, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]  # noqa: E731
    assert abs(ssim_torch(t(a), t(b)).item() - ref) < 1e-3
    assert abs(ssim_torch(t(a), t(a)).item() - 1.0) < 1e-5


def test_loss_terms_are_reported():
    torch.manual_seed(0)
    degraded, clean = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    scores = torch.full((2, 1, 32, 32), 2.0)
    total, terms = adaqual_loss(clean - degraded, degraded, clean, scores)
    assert total.item() == pytest.approx(terms['loss']) and terms['noise'] == 0
    assert terms['quality'] == 0 and terms['percep'] < 1e-4


def test_merge_config_rejects_unknown_keys():
    cfg = merge_config({'lr': '2e-4'}, ['batch_size=4', 'clean_dirs=[a, b]'])
    assert cfg.lr == 2e-4 and cfg.batch_size == 4 and cfg.clean_dirs == ['a', 'b']
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        merge_config(overrides=['batch_sise=4'])


def test_check_gradients_names_disconnected_parameters():
    lin, unused = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    lin(torch.ones(1, 2)).sum().backward()
    check_gradients({'lin': lin})
    with pytest.raises(RuntimeError, match='unused.weight'):
        check_gradients({'lin': lin, 'unused': unused})


@pytest.fixture(scope='module')
def real_batch(assets):
    files = list_images(['data/clean/bsds500/train'], assets)[:4]
    data = SyntheticCrops(files, 64, 32, seed=0)
    rng = np.random.default_rng(0)
    return _collate([data.sample(rng) for _ in range(4)])


def test_crops_cut_from_a_larger_synthesised_region(assets):
    from adaqual_ros.quality import build_estimator

    files = list_images(['data/clean/bsds500/train'], assets)[:2]
    estimator = build_estimator('learned', cell=32)

    def read_alone(item):  # the estimator's scores of the returned crop by itself
        crop = (item['degraded'].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return torch.from_numpy(estimator.estimate(crop).scores.astype(np.float32))

    for context in (1, 3):
        data = SyntheticCrops(files, 64, 32, seed=0, clean_prob=0.0, quality_jitter=0.0,
                              estimator='learned', estimator_prob=1.0, context=context)
        rng = np.random.default_rng(1)
        for _ in range(3):
            item = data.sample(rng)
            assert item['degraded'].shape == item['clean'].shape == (3, 64, 64)
            assert item['scores'].shape == (2, 2) and item['quality'].shape == (5, 2, 2)
            assert torch.isfinite(item['quality']).all()
            scores_in = item['quality'][0] * 2 + 3
            # context 1: the map is the crop's own; context 3: read with the 192 px region around
            assert torch.allclose(scores_in, read_alone(item), atol=1e-4) == (context == 1)
    with pytest.raises(ValueError, match='estimator_context'):
        SyntheticCrops(files, 64, 32, seed=0, context=0)


def test_dim_haze_crops_darken_only_the_hazy_ones(assets):
    # Same seed, same draws: only crops with haze differ, and they are darker (dusk/night fog).
    files = list_images(['data/clean/bsds500/train'], assets)[:2]
    day = SyntheticCrops(files, 64, 32, seed=0, clean_prob=0.0, camera_aug=0.0)
    night = SyntheticCrops(files, 64, 32, seed=0, clean_prob=0.0, camera_aug=0.0, dim_haze=1.0)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    hazy = 0
    for _ in range(12):
        a, b = day.sample(rng_a), night.sample(rng_b)
        assert a['condition'] == b['condition']
        assert torch.equal(a['clean'], b['clean'])
        if 'haze' in a['condition'].split('_'):
            hazy += 1
            assert b['degraded'].mean() < a['degraded'].mean()
        else:
            assert torch.equal(a['degraded'], b['degraded'])
    assert hazy > 0
    with pytest.raises(ValueError, match='dim_haze'):
        SyntheticCrops(files, 64, 32, seed=0, dim_haze=1.5)


def test_score_shift_moves_all_input_scores_of_a_crop_together(assets):
    files = list_images(['data/clean/bsds500/train'], assets)[:2]
    data = SyntheticCrops(files, 128, 32, seed=0, clean_prob=0.0, quality_jitter=0.0,
                          score_shift=0.5)
    rng = np.random.default_rng(4)
    shifts = []
    for _ in range(6):
        item = data.sample(rng)
        q_in = item['quality'][0] * 2 + 3
        inside = (q_in > 1.001) & (q_in < 4.999)  # not clipped to the score range
        diff = (q_in - item['scores'])[inside]
        if diff.numel():
            assert torch.allclose(diff, diff[0].expand_as(diff), atol=1e-4)
            shifts.append(float(diff[0]))
    assert len(shifts) >= 3 and max(abs(v) for v in shifts) > 0.05
    with pytest.raises(ValueError, match='score_shift'):
        SyntheticCrops(files, 128, 32, seed=0, score_shift=-1)


def test_a_few_steps_lower_the_loss(real_batch):
    from adaqual_ros.pipelines import AdaQualPipeline
    from adaqual_ros.prompting.text_encoder import PromptEncoder

    torch.manual_seed(0)
    torch.set_num_threads(1)
    pipe = AdaQualPipeline.from_components_config('tiny', cell=32)
    encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder, cache_size=0)
    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=5e-3)
    weights = LossWeights()

    def loss_at(seed):
        g = torch.Generator().manual_seed(seed)
        return training_loss(pipe.unet, encoder, pipe.prompter, pipe.scheduler, real_batch,
                             weights, g, 0.5, 32)

    with torch.no_grad():
        before = np.mean([loss_at(s)[0].item() for s in range(2)])
    for step in range(12):
        loss, _ = loss_at(100 + step)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            check_gradients({'unet': pipe.unet, 'text_encoder': pipe.text_encoder})
        opt.step()
    with torch.no_grad():
        after = np.mean([loss_at(s)[0].item() for s in range(2)])
    assert after < 0.9 * before, (before, after)


def _random_tiny_pipeline(seed=0):
    """A tiny pipeline with its zero-initialised layers randomised (so it predicts something)."""
    from adaqual_ros.pipelines import AdaQualPipeline

    torch.manual_seed(seed)
    pipe = AdaQualPipeline.from_components_config('tiny', cell=32)
    with torch.no_grad():
        for param in pipe.unet.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.05)
    return pipe


def test_unrolled_input_is_what_the_sampler_feeds_its_last_step():
    from adaqual_ros.quality.types import QualityMap

    pipe = _random_tiny_pipeline()
    pipe.unet.eval()
    pipe.text_encoder.eval()
    image = torch.rand(1, 3, 64, 96)
    qmap = QualityMap(np.full((2, 3), 2.5), np.full((2, 3, 4), 0.3), 32, (64, 96))
    latents = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    calls = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((args, dict(kwargs))), with_kwargs=True)
    try:
        pipe(image, [qmap], latents=latents, num_inference_steps=2)
    finally:
        hook.remove()
    (first_args, cond), (last_args, _) = calls
    x, t_last = sampler_last_input(pipe.unet, pipe.scheduler, image, cond, latents, 2)
    assert t_last == int(last_args[1]) == 499
    assert torch.allclose(x, last_args[0], atol=1e-6)
    assert not torch.allclose(x, latents)  # the model's first prediction went into it


def test_unrolled_training_loss_trains_on_the_sampler_input(real_batch):
    from adaqual_ros.prompting.text_encoder import PromptEncoder

    pipe = _random_tiny_pipeline(1)
    encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder, cache_size=0)

    def loss(unroll):
        g = torch.Generator().manual_seed(5)
        return training_loss(pipe.unet, encoder, pipe.prompter, pipe.scheduler, real_batch,
                             LossWeights(), g, 0.5, 32, unroll=unroll)[0]

    plain, unrolled = loss(0.0), loss(1.0)
    assert torch.isfinite(unrolled) and not torch.isclose(plain, unrolled)
    unrolled.backward()
    check_gradients({'unet': pipe.unet, 'text_encoder': pipe.text_encoder})


def test_train_refuses_a_bad_unroll_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r'unroll must be in \[0, 1\], got 1.5'):
        train(merge_config(None, [f'out_dir={tmp_path / "run"}', 'unroll=1.5']))
    with pytest.raises(ValueError, match='unroll_steps must be >= 2'):
        train(merge_config(None, [f'out_dir={tmp_path / "run"}', 'unroll=0.5', 'unroll_steps=1']))
    assert not (tmp_path / 'run').exists()


def test_train_writes_log_checkpoint_and_resumes(assets, tmp_path):
    overrides = [f'out_dir={tmp_path / "run"}', f'save_to={tmp_path / "ship"}',
                 'model_config=tiny', 'cell=32', 'crop=64', 'batch_size=2', 'steps=3',
                 'val_every=3', 'checkpoint_every=3', 'val_images=1', 'val_size=64',
                 'num_workers=0', 'max_images=3', 'time_limit_min=0', 'threads=1',
                 'warmup_steps=1', 'clean_dirs=[data/clean/bsds500/train]']
    first = train(merge_config({'assets': str(assets)}, overrides))
    assert first['step'] == 3
    run = tmp_path / 'run'
    records = [json.loads(line) for line in (run / 'train_log.jsonl').read_text().splitlines()]
    assert any(r['event'] == 'val' and 'psnr' in r for r in records)
    assert (run / 'checkpoint' / 'trainer_state.json').is_file()
    assert (run / 'pipeline_final' / 'model_index.json').is_file()
    second = train(merge_config({'assets': str(assets)}, overrides[:-10] + [
        'steps=5', 'val_every=100', 'checkpoint_every=100', 'val_images=1', 'val_size=64',
        'num_workers=0', 'max_images=3', 'time_limit_min=0', 'threads=1', 'warmup_steps=1',
        'clean_dirs=[data/clean/bsds500/train]']))
    assert second['step'] == 5
    starts = [r['step'] for r in map(json.loads, (run / 'train_log.jsonl').read_text()
                                     .splitlines()) if r['event'] == 'start']
    assert starts == [0, 3]


def test_init_starts_from_a_saved_pipeline(assets, tmp_path):
    """init=FOLDER fine-tunes: the run starts from those weights, not from a fresh model."""
    from adaqual_ros.pipelines.pipeline_adaqual import AdaQualPipeline

    base = ['model_config=tiny', 'cell=32', 'crop=64', 'batch_size=2', 'val_images=1',
            'val_size=64', 'num_workers=0', 'max_images=3', 'time_limit_min=0', 'threads=1',
            'warmup_steps=1', 'clean_dirs=[data/clean/bsds500/train]', 'camera_aug=1.0']
    train(merge_config({'assets': str(assets)}, base + [
        f'out_dir={tmp_path / "a"}', 'steps=2', 'val_every=100', 'checkpoint_every=100']))
    start = tmp_path / 'a' / 'pipeline_final'
    # lr 0: the weights cannot move, so a fine-tune from `start` must end where it began
    train(merge_config({'assets': str(assets)}, base + [
        f'out_dir={tmp_path / "b"}', f'init={start}', 'steps=1', 'lr=0', 'min_lr=0',
        'val_every=100', 'checkpoint_every=100']))
    a = AdaQualPipeline.from_pretrained(start).unet.state_dict()
    b = AdaQualPipeline.from_pretrained(tmp_path / 'b' / 'pipeline_final').unet.state_dict()
    fresh = AdaQualPipeline.from_components_config('tiny', cell=32).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], fresh[k]) for k in a)


def _joint_batch(assets, prob, n=4):
    files = list_images(['data/clean/bsds500/train'], assets)[:2]
    data = SyntheticCrops(files, 64, 32, seed=0, clean_prob=0.0, quality_jitter=0.0,
                          estimator='learned', estimator_prob=prob, context=3, joint=True)
    rng = np.random.default_rng(2)
    return _collate([data.sample(rng) for _ in range(n)])


def test_joint_conditioning_is_the_estimators_read_of_the_crops_region(assets):
    from adaqual_ros.quality import build_estimator

    batch = _joint_batch(assets, 0.5, n=6)
    assert batch['est_image'].shape == (6, 3, 192, 192) and batch['est_types'].shape[1:] == (
        6, 6, 4)
    assert 0 < batch['est_pick'].sum() < 6  # both kinds of crop in the batch
    estimator = build_estimator('learned', cell=32)
    quality, loss, terms = estimator_conditioning(estimator, batch, 32)
    assert quality.shape == (6, 5, 2, 2) and loss.requires_grad and terms['est_l1'] > 0
    for i, (r, c) in enumerate(batch['est_cells'].tolist()):
        # the training crop is cells r..r+1, c..c+1 of its region, ground truth and read alike
        assert torch.equal(batch['scores'][i], batch['est_scores'][i, r:r + 2, c:c + 2])
        region = (batch['est_image'][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        read = estimator.estimate(region)
        assert np.allclose(quality[i, 0].detach().numpy() * 2 + 3,
                           read.scores[r:r + 2, c:c + 2], atol=1e-4)
        assert np.allclose(quality[i, 1:].detach().permute(1, 2, 0).numpy(),
                           read.type_probs[r:r + 2, c:c + 2], atol=1e-4)


def test_joint_loss_reaches_the_estimator_through_the_picked_crops_only(assets):
    from adaqual_ros.prompting.text_encoder import PromptEncoder
    from adaqual_ros.quality.learned import load_learned_estimator

    pipe = _random_tiny_pipeline(2)
    encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder, cache_size=0)
    for prob, reached in ((1.0, True), (0.0, False)):
        estimator = load_learned_estimator(cell=32)
        estimator.eval()
        batch = _joint_batch(assets, prob)
        g = torch.Generator().manual_seed(5)
        # estimator_weight 0: only the restorer's loss, so any gradient came through the map
        loss, terms = training_loss(pipe.unet, encoder, pipe.prompter, pipe.scheduler, batch,
                                    LossWeights(), g, 0.5, 32, estimator=estimator,
                                    estimator_weight=0.0)
        assert {'est_l1', 'est_bce', 'total'} <= set(terms)
        loss.backward()
        grads = [p.grad for p in estimator.parameters()]
        assert all(gr is not None and gr.abs().sum() > 0 for gr in grads) == reached
        # (weight 0 still builds the estimator's own loss into the graph: zero, not None)
        assert all(gr is None or not gr.abs().sum() for gr in grads) == (not reached)


def test_joint_training_saves_the_estimator_beside_the_pipeline(assets, tmp_path):
    from adaqual_ros.quality.learned import load_learned_estimator

    with pytest.raises(ValueError, match='set estimator=learned'):
        train(merge_config(None, [f'out_dir={tmp_path / "bad"}', 'joint_estimator=true']))
    assert not (tmp_path / 'bad').exists()
    train(merge_config({'assets': str(assets)}, [
        f'out_dir={tmp_path / "run"}', 'model_config=tiny', 'cell=32', 'crop=64',
        'batch_size=2', 'steps=2', 'val_every=2', 'checkpoint_every=100', 'val_images=1',
        'val_size=64', 'num_workers=0', 'max_images=3', 'time_limit_min=0', 'threads=1',
        'warmup_steps=1', 'clean_dirs=[data/clean/bsds500/train]', 'estimator=learned',
        'estimator_prob=1.0', 'estimator_context=2', 'joint_estimator=true',
        'estimator_lr=1e-2']))
    shipped = load_learned_estimator(cell=32).state_dict()
    for folder in ('pipeline', 'pipeline_final'):
        trained = load_learned_estimator(tmp_path / 'run' / folder / 'estimator',
                                         cell=32).state_dict()
        assert trained.keys() == shipped.keys()
        assert not all(torch.equal(trained[k], shipped[k]) for k in shipped)
    # the saved pipeline loads with its own estimator
    from adaqual_ros.pipelines import AdaQualPipeline
    loaded = AdaQualPipeline.from_pretrained(tmp_path / 'run' / 'pipeline_final')
    assert all(torch.equal(v, trained[k]) for k, v in loaded.get_estimator().state_dict().items())
    log = (tmp_path / 'run' / 'train.log').read_text()
    assert 'estimator trained jointly' in log and "the estimator's maps" in log
    # a fine-tune of that pipeline goes on with its estimator unless told another one
    common = ['model_config=tiny', 'cell=32', 'crop=64', 'batch_size=2', 'steps=0',
              'val_images=1', 'val_size=64', 'num_workers=0', 'max_images=3', 'threads=1',
              'time_limit_min=0', 'clean_dirs=[data/clean/bsds500/train]', 'estimator=learned',
              f'init={tmp_path / "run" / "pipeline_final"}']
    train(merge_config({'assets': str(assets)}, [f'out_dir={tmp_path / "ft"}'] + common))
    config = json.loads((tmp_path / 'ft' / 'config.json').read_text())
    assert config['estimator_path'] == str(tmp_path / 'run' / 'pipeline_final' / 'estimator')
    from adaqual_ros.quality.learned import default_checkpoint_path
    other = str(default_checkpoint_path())
    train(merge_config({'assets': str(assets)}, [f'out_dir={tmp_path / "ft2"}',
                                                 f'estimator_path={other}'] + common))
    assert json.loads((tmp_path / 'ft2' / 'config.json').read_text())['estimator_path'] == other
