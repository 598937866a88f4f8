//! `histoshard classify`: an ImageNet backbone with its own 1000-class head
//! on ordinary photos — the check that the weights loaded are the weights
//! trained, before anything is built on them.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData, activation::softmax};
use image::{RgbImage, imageops::FilterType};

use super::{
    error::TrainResult,
    infer::to_vec,
    models::{Backbone, EfficientNet, EfficientNetConfig, LiteVariant, efficientnet, pretrained},
};
use crate::{dataset::image_io, preprocess::to_chw};

/// The 1000 ImageNet-1k class names, in index order (torchvision's list).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("models/imagenet_classes.txt")
        .lines()
        .collect()
}

/// One image's best classes: (class index, name, probability), best first.
#[derive(Clone, Debug)]
pub struct Classified {
    pub path: PathBuf,
    pub top: Vec<(usize, String, f64)>,
}

/// The ImageNet evaluation crop: the shorter side scaled to `side / 0.875`,
/// then the centre `side`×`side`.
pub fn center_crop(img: &RgbImage, side: u32) -> RgbImage {
    let short = img.width().min(img.height()).max(1) as f64;
    let scale = (side as f64 / 0.875) / short;
    let w = ((img.width() as f64 * scale).round() as u32).max(side);
    let h = ((img.height() as f64 * scale).round() as u32).max(side);
    let resized = image::imageops::resize(img, w, h, FilterType::Triangle);
    image::imageops::crop_imm(&resized, (w - side) / 2, (h - side) / 2, side, side).to_image()
}

/// Loads `variant` with its ImageNet head from `weights` (or the cache).
pub fn imagenet_model(
    variant: LiteVariant,
    weights: Option<&Path>,
    device: &Device,
) -> TrainResult<EfficientNet> {
    let path = pretrained::resolve_weights(variant.kind(), weights)?;
    let model = EfficientNetConfig::new(variant)
        .with_num_classes(1000)
        .init(device);
    Ok(model.load_imagenet(&path, true)?)
}

/// Top-`k` ImageNet classes of each image.
pub fn classify(
    model: &EfficientNet,
    variant: LiteVariant,
    images: &[PathBuf],
    k: usize,
    device: &Device,
) -> TrainResult<Vec<Classified>> {
    let names = imagenet_classes();
    let side = variant.resolution();
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let img = image_io::decode_rgb(path, Default::default())?;
        let x = to_chw(&center_crop(&img, side), &efficientnet::NORMALIZATION);
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [1, 3, side as usize, side as usize]),
            device,
        );
        let probs = to_vec(softmax(model.forward(x), 1))?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        out.push(Classified {
            path: path.clone(),
            top: order
                .into_iter()
                .take(k)
                .map(|i| {
                    let name = names.get(i).copied().unwrap_or("?").to_string();
                    (i, name, probs[i] as f64)
                })
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_list_is_imagenet_1k() {
        let names = imagenet_classes();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[281], "tabby");
        assert_eq!(names[999], "toilet tissue");
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        let mut img = RgbImage::new(400, 200);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if (150..250).contains(&x) { 255 } else { 0 }, 0, 0]);
        }
        let c = center_crop(&img, 100);
        assert_eq!(c.dimensions(), (100, 100));
        // 200 → 114 rows: the 100 centre columns of 228 are the bright band's middle.
        assert!(c.get_pixel(50, 50)[0] > 200);
        assert!(c.get_pixel(0, 50)[0] < 60);
    }
}
