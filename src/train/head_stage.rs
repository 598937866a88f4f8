//! Stage 1 of transfer learning: the frozen backbone runs once over train
//! and val, in inference mode (from the prefix cache's activations when
//! fine-tuning will use one, [`super::prefix_cache`]), and its pooled
//! features are kept in memory
//! ([`FeatureCache`]: 1,280 floats a patch for EfficientNet-Lite and
//! MobileNetV2, 512 or 2,048 for ResNets, 2,048 for Inception-v3, about
//! 10 MB for the GlaS set); the new head then trains on those for
//! `freeze_epochs` epochs ([`head_epoch`]), which costs milliseconds an
//! epoch. Each epoch is checkpointed like any other.

use std::time::Instant;

use burn::{
    module::Module,
    nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig},
    optim::{GradientsParams, ModuleOptimizer},
    tensor::{Device, Int, Tensor, TensorData},
};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::{
    data::{Dataset, LoaderConfig, seed_of},
    error::{TrainError, TrainResult},
    infer::{Inference, Predictions, images_tensor, softmax_rows, to_vec},
    metrics,
    models::{Model, Pretrained},
    prefix_cache::PrefixCache,
    session::{Session, Start, end_epoch, epoch_row},
    transfer,
};
use crate::progress::Progress;

/// Stage 1 of transfer learning: cache the frozen backbone's features of
/// train and val once, then train the new head on them for `epochs` (of
/// `freeze_epochs`) epochs; each epoch is checkpointed like any other. When
/// fine-tuning will run from cached prefix activations, those are built
/// first (spilling beyond `cache_memory` bytes), the features computed from
/// them, and both stages use them.
pub(super) fn head_stage(
    session: &Session,
    start: Start,
    epochs: usize,
    cache_memory: Option<usize>,
) -> TrainResult<Start> {
    let (info, base, progress) = (session.info, session.base, session.progress);
    let cfg = &info.config;
    let Some(t) = &cfg.transfer else {
        return Ok(start);
    };
    let device = base.clone().autodiff();
    let Start {
        model,
        mut optim,
        mut state,
        mut history,
        prefix,
    } = start;
    let loader = cfg.eval_loader();
    let started = Instant::now();
    let prefix = session.prefix_caches(prefix, &model, cache_memory)?;
    let mut net = transfer::backbone(model)?.freeze_backbone(0, true);
    let (train_cache, val_cache) = match &prefix {
        Some(caches) => (
            FeatureCache::from_prefix(&net, &caches.train, base)?,
            caches
                .val
                .as_ref()
                .map(|c| FeatureCache::from_prefix(&net, c, base))
                .transpose()?,
        ),
        None => (
            FeatureCache::build(
                &net,
                session.train_data,
                &loader,
                base,
                progress,
                "features",
            )?,
            session
                .val_data
                .map(|v| FeatureCache::build(&net, v, &loader, base, progress, "features"))
                .transpose()?,
        ),
    };
    let mut cache_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "frozen {} features of {} + {} patches cached in {cache_seconds:.1} s ({:.1} patches/s)",
        cfg.model.kind(),
        train_cache.len(),
        val_cache.as_ref().map_or(0, FeatureCache::len),
        (train_cache.len() + val_cache.as_ref().map_or(0, FeatureCache::len)) as f64
            / cache_seconds.max(1e-9)
    );
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(info.class_weights.clone())
        .init(&device);
    for epoch in 1..=epochs {
        device.seed(seed_of(&[cfg.seed, epoch as u64, 0xd0]));
        let epoch_start = Instant::now();
        let (trained, stats) = head_epoch(
            net,
            &mut optim,
            &train_cache,
            &loss_fn,
            cfg.batch_size,
            t.head_lr,
            seed_of(&[cfg.seed, epoch as u64]),
            &device,
        )
        .map_err(|e| match e {
            TrainError::NonFiniteLoss {
                batch, value, lr, ..
            } => TrainError::NonFiniteLoss {
                epoch,
                batch,
                value,
                lr,
            },
            other => other,
        })?;
        let val = val_cache
            .as_ref()
            .map(|c| head_predictions(&trained, c, base))
            .transpose()?;
        // The first epoch pays for the feature pass.
        let seconds = epoch_start.elapsed().as_secs_f64() + cache_seconds;
        cache_seconds = 0.0;
        let row = epoch_row(
            epoch,
            t.head_lr,
            stats.loss / stats.seen.max(1) as f64,
            stats.correct as f64 / stats.seen.max(1) as f64,
            val.as_ref(),
            stats.seen,
            seconds,
            "head",
            info.num_classes,
        );
        let model = Model::from(trained);
        let stop = end_epoch(session, &model, &optim, &mut state, &mut history, row)?;
        net = transfer::backbone(model)?;
        if stop {
            break;
        }
    }
    Ok(Start {
        model: net.into(),
        // Stage 2 starts its own optimizer: the head's moments were for another learning rate.
        optim: cfg.optimizer(),
        state,
        history,
        prefix,
    })
}

/// Pooled features of every record of `data`, in data order.
pub struct FeatureCache {
    /// Width of one feature vector.
    pub width: usize,
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub rows: Vec<usize>,
}

impl FeatureCache {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Runs the frozen backbone over `data` once (inference: batch norm
    /// folded where [`Inference`] can, no graph; `loader` must not shuffle).
    pub fn build(
        model: &Pretrained,
        data: &Dataset,
        loader: &LoaderConfig,
        device: &Device,
        progress: &Progress,
        stage: &str,
    ) -> TrainResult<Self> {
        let device = device.clone().without_autodiff();
        let model = Inference::of_pretrained(model);
        let bar = progress.bar(stage, data.len() as u64, "patches");
        let mut out = FeatureCache {
            width: 0,
            features: Vec::new(),
            labels: Vec::with_capacity(data.len()),
            rows: Vec::with_capacity(data.len()),
        };
        for batch in data.stream(loader, 0)? {
            let batch = batch?;
            let f = model.features(images_tensor(&batch, &device))?;
            out.width = f.dims()[1];
            out.features.extend(to_vec(f)?);
            out.labels.extend_from_slice(&batch.labels);
            out.rows.extend_from_slice(&batch.rows);
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// The features of every record of `cache` from its activations, batch
    /// by batch as its loader streamed them: the model's tail in inference
    /// mode. With the loader [`FeatureCache::build`] would use, the same
    /// values in the same order: the same operations on the same batches,
    /// the prefix's already done (`tests/pretrained.rs`).
    pub fn from_prefix(
        model: &Pretrained,
        cache: &PrefixCache,
        device: &Device,
    ) -> TrainResult<Self> {
        let device = device.clone().without_autodiff();
        let model = Inference::of_pretrained(model);
        let rows: Vec<usize> = cache.batches().concat();
        let mut out = FeatureCache {
            width: 0,
            features: Vec::new(),
            labels: rows.iter().map(|&r| cache.labels()[r] as i64).collect(),
            rows,
        };
        for batch in cache.batches() {
            let f = model.tail_features(cache.batch(batch, &device)?, cache.tail())?;
            out.width = f.dims()[1];
            out.features.extend(to_vec(f)?);
        }
        Ok(out)
    }

    fn batch(&self, items: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let w = self.width;
        let mut x = Vec::with_capacity(items.len() * w);
        let mut y = Vec::with_capacity(items.len());
        for &i in items {
            x.extend_from_slice(&self.features[i * w..(i + 1) * w]);
            y.push(self.labels[i]);
        }
        (
            Tensor::from_data(TensorData::new(x, [items.len(), w]), device),
            Tensor::from_data(TensorData::new(y, [items.len()]), device),
        )
    }
}

/// What one stage-1 epoch measured.
pub struct HeadEpoch {
    pub loss: f64,
    pub correct: usize,
    pub seen: usize,
}

/// One epoch of the head on cached features: shuffled (seeded by `seed`),
/// `batch_size` at a time.
#[allow(clippy::too_many_arguments)]
pub fn head_epoch(
    model: Pretrained,
    optim: &mut ModuleOptimizer,
    cache: &FeatureCache,
    loss_fn: &CrossEntropyLoss,
    batch_size: usize,
    lr: f64,
    seed: u64,
    device: &Device,
) -> TrainResult<(Pretrained, HeadEpoch)> {
    let mut order: Vec<usize> = (0..cache.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed_of(&[seed, 0x4ead])));
    let mut model = model;
    let mut stats = HeadEpoch {
        loss: 0.0,
        correct: 0,
        seen: 0,
    };
    let batch_size = batch_size.max(1);
    for (b, items) in order.chunks(batch_size).enumerate() {
        let (x, y) = cache.batch(items, device);
        let logits = model.head(x);
        let loss = loss_fn.forward(logits.clone(), y);
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                epoch: 0,
                batch: b + 1,
                value,
                lr,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let k = logits.dims()[1];
        let flat = to_vec(logits)?;
        stats.correct += flat
            .chunks(k)
            .zip(items)
            .filter(|(row, i)| {
                let p: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                metrics::argmax(&p) == cache.labels[**i] as usize
            })
            .count();
        stats.loss += value as f64 * items.len() as f64;
        stats.seen += items.len();
    }
    Ok((model, stats))
}

/// The head's class probabilities on cached features (inference mode).
pub fn head_predictions(
    model: &Pretrained,
    cache: &FeatureCache,
    device: &Device,
) -> TrainResult<Predictions> {
    let device = device.clone().without_autodiff();
    let model = model.valid();
    let mut out = Predictions::default();
    let items: Vec<usize> = (0..cache.len()).collect();
    for chunk in items.chunks(256) {
        let (x, _) = cache.batch(chunk, &device);
        let logits = model.head(x);
        let k = logits.dims()[1];
        out.probabilities.extend(softmax_rows(&to_vec(logits)?, k));
    }
    out.labels = cache.labels.iter().map(|&l| l as usize).collect();
    out.rows = cache.rows.clone();
    Ok(out)
}
