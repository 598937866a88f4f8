//! The registry: the table against the networks, specs through JSON, checks.

use super::*;

fn device() -> Device {
    Device::default()
}

#[test]
fn forward_shapes() {
    let d = device();
    let x = Tensor::<4>::zeros([3, 3, 32, 32], &d);
    let mlp = ModelSpec::Mlp(MlpConfig::new().with_input_size(32)).init(&d);
    assert_eq!(mlp.forward(x.clone()).dims(), [3, 2]);
    let cnn = ModelSpec::Cnn(CnnConfig::new().with_width(4).with_depth(3)).init(&d);
    assert_eq!(cnn.forward(x).dims(), [3, 2]);
    // Global pooling: any size.
    let x = Tensor::<4>::zeros([2, 3, 48, 40], &d);
    assert_eq!(cnn.forward(x).dims(), [2, 2]);
    let cnn3 = ModelSpec::Cnn(
        CnnConfig::new()
            .with_width(4)
            .with_depth(2)
            .with_num_classes(3),
    )
    .init(&d);
    assert_eq!(
        cnn3.forward(Tensor::zeros([1, 3, 16, 16], &d)).dims(),
        [1, 3]
    );
}

/// A standardising mlp sees each patch's structure, not its stain's
/// strength: scaling and shifting a channel leaves its output unchanged; the
/// plain one's changes.
#[test]
fn a_standardising_mlp_ignores_per_channel_scale_and_shift() {
    let d = device();
    let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &d);
    let scale = Tensor::<1>::from_floats([0.5, 2.0, 1.5], &d).reshape([1, 3, 1, 1]);
    let shift = Tensor::<1>::from_floats([0.3, -1.0, 0.1], &d).reshape([1, 3, 1, 1]);
    let moved = x.clone() * scale + shift;
    for (standardize, same) in [(true, true), (false, false)] {
        let mlp = MlpConfig::new()
            .with_input_size(8)
            .with_dropout(0.0)
            .with_standardize(Some(standardize))
            .init(&d);
        let gap: f32 = (mlp.forward(x.clone()) - mlp.forward(moved.clone()))
            .abs()
            .max()
            .into_scalar();
        assert_eq!(gap < 1e-4, same, "standardize {standardize}: gap {gap}");
    }
    let z = super::mlp::standardize(moved);
    let mean: f32 = z.clone().mean().into_scalar();
    let var: f32 = z.powf_scalar(2.0).mean().into_scalar();
    assert!(
        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
        "{mean} {var}"
    );
}

#[test]
fn widths_double_up_to_the_cap() {
    let c = CnnConfig::new()
        .with_width(32)
        .with_depth(5)
        .with_max_width(128);
    assert_eq!(c.widths(), vec![32, 64, 128, 128, 128]);
}

#[test]
fn validation_catches_too_small_inputs() {
    let spec = ModelSpec::Cnn(CnnConfig::new().with_depth(4).with_stem_stride(2));
    assert!(spec.validate(Some(32)).is_ok());
    assert!(spec.validate(Some(16)).is_err());
    assert!(
        ModelSpec::default_for(ModelKind::Mlp, 1)
            .validate(None)
            .is_err()
    );
}

#[test]
fn torchvision_kinds_are_pretrained_and_round_trip() {
    for (kind, tag) in [
        (ModelKind::MobilenetV2, "mobilenet_v2"),
        (ModelKind::InceptionV3, "inception_v3"),
    ] {
        assert!(kind.is_pretrained());
        assert_eq!(kind.to_string(), tag);
        let spec = ModelSpec::default_for(kind, 3);
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(&format!("\"kind\":\"{tag}\"")), "{text}");
        let back: ModelSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.kind(), kind);
        assert_eq!(back.num_classes(), 3);
        assert_eq!(back.input_size(), None, "the patch size is the input size");
    }
    assert_eq!(
        ModelSpec::default_for(ModelKind::InceptionV3, 2).normalization(),
        inception::NORMALIZATION
    );
}

#[test]
fn inception_needs_75_pixel_patches() {
    let spec = ModelSpec::default_for(ModelKind::InceptionV3, 2);
    assert!(spec.validate(Some(75)).is_ok());
    assert!(spec.validate(Some(299)).is_ok());
    let err = spec.validate(Some(74)).unwrap_err().to_string();
    assert!(err.contains("at least 75×75"), "{err}");
    let mobilenet = ModelSpec::default_for(ModelKind::MobilenetV2, 2);
    assert!(mobilenet.validate(Some(32)).is_ok());
    assert!(mobilenet.validate(Some(16)).is_err());
}

/// Each row of the table sits at its kind's place, builds a
/// configuration of that kind with the row's dropout and the `run.json`
/// tag runs have always had, and states the network's real block count
/// and feature width.
#[test]
fn the_table_describes_each_network() {
    let d = device();
    let tags = [
        "mlp",
        "cnn",
        "efficientnet",
        "efficientnet",
        "efficientnet",
        "resnet",
        "resnet",
        "mobilenet_v2",
        "inception_v3",
    ];
    for (i, info) in MODELS.iter().enumerate() {
        let kind = info.kind;
        assert_eq!(kind as usize, i, "{kind} is out of its place");
        let spec = ModelSpec::default_for(kind, 3);
        assert_eq!((spec.kind(), spec.num_classes()), (kind, 3));
        assert_eq!(spec.dropout(), info.dropout, "{kind}");
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            text.contains(&format!("\"kind\":\"{}\"", tags[i])),
            "{text}"
        );
        let side = info.min_side.max(32);
        assert!(spec.validate(Some(side)).is_ok(), "{kind} at {side} px");
        match Pretrained::try_from(spec.init(&d)) {
            Ok(net) => {
                assert!(kind.is_pretrained(), "{kind}");
                assert_eq!(net.num_blocks(), info.blocks, "{kind}");
                let features = net.features(Tensor::zeros([1, 3, side, side], &d));
                assert_eq!(features.dims(), [1, info.features], "{kind}");
            }
            Err(_) => assert!(!kind.is_pretrained() && info.blocks == 0, "{kind}"),
        }
    }
}

#[test]
fn spec_round_trips_through_json() {
    let spec = ModelSpec::Cnn(CnnConfig::new().with_width(8));
    let text = serde_json::to_string(&spec).unwrap();
    assert!(text.contains("\"kind\":\"cnn\""), "{text}");
    let back: ModelSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back.kind(), ModelKind::Cnn);
    assert_eq!(back.input_size(), None);
}

/// An mlp's `run.json` from before `standardize` existed still loads, as the
/// network it was: without standardisation.
#[test]
fn an_mlp_spec_without_standardize_loads_as_unstandardised() {
    let old = r#"{"kind":"mlp","input_size":8,"hidden":[16],"num_classes":2,"dropout":0.2}"#;
    let spec: ModelSpec = serde_json::from_str(old).unwrap();
    let ModelSpec::Mlp(m) = &spec else {
        panic!("{spec:?}")
    };
    assert_eq!(m.standardize, None);
    let d = device();
    let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &d);
    let net = m.clone().with_dropout(0.0).init(&d);
    let shifted: f32 = (net.forward(x.clone()) - net.forward(x.add_scalar(1.0)))
        .abs()
        .max()
        .into_scalar();
    assert!(
        shifted > 1e-4,
        "a shift of every pixel must reach the plain mlp"
    );
}
