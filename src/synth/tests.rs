use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::codecs::bmp::BmpDecoder;
use image::{ColorType, ImageDecoder};

use super::*;

fn opts(images: usize, seed: u64) -> SynthOptions {
    SynthOptions { images, seed }
}

/// Bits per pixel from a BMP's info header.
fn bmp_bits(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..2], b"BM");
    u16::from_le_bytes([bytes[28], bytes[29]])
}

/// A mask's raw palette indices (what the label values are).
fn mask_indices(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = fs::read(path).unwrap();
    let mut dec = BmpDecoder::new(Cursor::new(bytes)).unwrap();
    dec.set_indexed_color(true);
    assert_eq!(dec.color_type(), ColorType::L8);
    let (w, h) = dec.dimensions();
    let mut buf = vec![0u8; dec.total_bytes() as usize];
    dec.read_image(&mut buf).unwrap();
    (w, h, buf)
}

fn expected_names(sizes: [usize; 3]) -> Vec<String> {
    let mut names = Vec::new();
    for (split, &n) in sizes.iter().enumerate() {
        names.extend((1..=n).map(|i| format!("{}_{}", SPLITS[split], i)));
    }
    names
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn layout_matches_the_glas_download() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("glas");
    let summary = generate(&out, &opts(12, 1)).unwrap();
    assert_eq!(summary.images, 12);
    assert_eq!(summary.benign + summary.malignant, 12);
    assert_eq!(summary.patients, 2);

    // Files: exactly the images, their masks and Grade.csv (no temp file left).
    let names = expected_names([6, 4, 2]);
    let mut want: BTreeSet<String> = names
        .iter()
        .flat_map(|n| [format!("{n}.bmp"), format!("{n}_anno.bmp")])
        .collect();
    want.insert("Grade.csv".into());
    assert_eq!(file_names(&out), want);

    // Grade.csv, byte for byte in the real format.
    let csv = String::from_utf8(fs::read(out.join("Grade.csv")).unwrap()).unwrap();
    assert!(!csv.contains('\n'), "CR-only line ends");
    assert!(!csv.ends_with('\r'), "no final line end");
    let lines: Vec<&str> = csv.split('\r').collect();
    assert_eq!(
        lines[0],
        "name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"
    );
    assert_eq!(lines.len(), 13);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted[..3], ["testA_1", "testA_2", "testA_3"]);
    let mut classes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut benign = 0;
    for (line, name) in lines[1..].iter().zip(&sorted) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], name);
        let patient: usize = fields[1].parse().unwrap();
        assert!((1..=2).contains(&patient), "{line}");
        let grade = fields[2].strip_prefix(' ').unwrap();
        let sub = fields[3].strip_prefix(' ').unwrap();
        match grade {
            "benign" => {
                benign += 1;
                assert!(BENIGN_GRADES.contains(&sub), "{line}");
            }
            "malignant" => assert!(MALIGNANT_GRADES.contains(&sub), "{line}"),
            _ => panic!("bad grade in {line}"),
        }
        let split = name.split('_').next().unwrap();
        classes.entry(split).or_default().insert(grade);
    }
    assert_eq!(benign, summary.benign);
    for split in SPLITS {
        assert_eq!(classes[split].len(), 2, "both classes in {split}");
    }

    // Images: 24-bit RGB; masks: 8-bit, same size, labels exactly 0..=N.
    for name in &names {
        let img_path = out.join(format!("{name}.bmp"));
        let mask_path = out.join(format!("{name}_anno.bmp"));
        assert_eq!(bmp_bits(&fs::read(&img_path).unwrap()), 24);
        assert_eq!(bmp_bits(&fs::read(&mask_path).unwrap()), 8);
        let img = image::open(&img_path).unwrap();
        assert_eq!(img.color(), ColorType::Rgb8);
        assert!(img.width() >= 430 && img.height() >= 430);
        let (w, h, labels) = mask_indices(&mask_path);
        assert_eq!((w, h), (img.width(), img.height()));
        let present: BTreeSet<u8> = labels.iter().copied().collect();
        let max = *present.iter().max().unwrap();
        assert!(
            max >= 1 && max as usize <= render::MAX_GROUPS_FOR_TESTS,
            "{name}: {max}"
        );
        assert_eq!(present, (0..=max).collect::<BTreeSet<u8>>(), "{name}");
        // A plain decode (palette expanded) gives the same values.
        let luma = image::open(&mask_path).unwrap().to_luma8();
        assert_eq!(luma.into_raw(), labels, "{name}");
    }
}

#[test]
fn full_size_matches_the_real_splits_and_balance() {
    let items = plan(&opts(165, 0));
    let mut per_split = [[0usize; 2]; 3];
    for it in &items {
        per_split[it.split][usize::from(it.malignant)] += 1;
    }
    assert_eq!(per_split.map(|c| c[0] + c[1]), [85, 60, 20]);
    assert_eq!(per_split[0], [37, 48]);
    assert_eq!(per_split[1][0] + per_split[2][0], 37);
    assert_eq!(summarise(&items).patients, 16);
    let names: BTreeSet<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 165);

    // Patients: shared between train and test, each with a dominant grade, a few mixed.
    let mut by_patient: BTreeMap<usize, ([usize; 2], BTreeSet<usize>)> = BTreeMap::new();
    for it in &items {
        let e = by_patient.entry(it.patient).or_default();
        e.0[usize::from(it.malignant)] += 1;
        e.1.insert(it.split.min(1));
    }
    assert!(by_patient.values().filter(|(_, s)| s.len() == 2).count() >= 8);
    let mut mixed = 0;
    for (p, (c, _)) in &by_patient {
        let major = c[0].max(c[1]) as f32 / (c[0] + c[1]) as f32;
        assert!(major >= 0.6, "patient {p}: {c:?}");
        mixed += usize::from(c[0] > 0 && c[1] > 0);
    }
    assert!((1..=4).contains(&mixed), "{mixed} mixed patients");

    // Sizes: mostly 775×522, never under 430 px.
    let standard = items
        .iter()
        .filter(|i| (i.look.width, i.look.height) == STANDARD_SIZE)
        .count();
    assert!(standard > 165 / 2, "{standard}");
    assert!(
        items
            .iter()
            .all(|i| i.look.width >= 430 && i.look.height >= 430)
    );
}

#[test]
fn split_sizes_and_labels_scale() {
    assert_eq!(split_sizes(165), [85, 60, 20]);
    assert_eq!(split_sizes(12), [6, 4, 2]);
    for n in 1..500 {
        let s = split_sizes(n);
        assert_eq!(s.iter().sum::<usize>(), n);
        if n >= 3 {
            assert!(s.iter().all(|&k| k >= 1), "{n}: {s:?}");
        }
        for (split, &k) in s.iter().enumerate() {
            let b = benign_count(split, k);
            assert!(b <= k);
            if k >= 2 {
                assert!(b >= 1 && b < k, "{n}/{split}: {b} of {k}");
            }
        }
    }
}

#[test]
fn same_seed_same_bytes_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    generate(&a, &opts(4, 7)).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| generate(&b, &opts(4, 7))).unwrap();
    generate(&c, &opts(4, 8)).unwrap();
    let files = file_names(&a);
    assert_eq!(files, file_names(&b));
    assert_eq!(files, file_names(&c));
    for f in &files {
        let fa = fs::read(a.join(f)).unwrap();
        assert_eq!(fa, fs::read(b.join(f)).unwrap(), "{f}");
        if f.ends_with(".bmp") && !f.ends_with("_anno.bmp") {
            assert_ne!(fa, fs::read(c.join(f)).unwrap(), "{f}");
        }
    }
}

#[test]
fn refuses_a_folder_with_a_data_set_and_zero_images() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("glas");
    generate(&out, &opts(3, 0)).unwrap();
    let err = generate(&out, &opts(3, 0)).unwrap_err();
    assert!(matches!(err, Error::Output { .. }), "{err}");
    assert!(err.to_string().contains("already holds a data set"));
    let err = generate(&tmp.path().join("other"), &opts(0, 0)).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

fn look(k: u64, malignant: bool, atypia: f32) -> Look {
    Look {
        width: 775,
        height: 522,
        malignant,
        atypia,
        healthy: !malignant && atypia < 0.1,
        seed: mix64(1000 + k),
        stain_seed: mix64(k / 3),
    }
}

/// Fraction of gland pixels that are dark (nuclei): all of them, and those more
/// than `INTERIOR` px inside the gland (benign nuclei sit in one basal row; malignant
/// ones fill the epithelium).
fn dark_nuclei_in_glands(r: &render::Rendered, w: usize, h: usize) -> (f32, f32) {
    const INTERIOR: f32 = 18.0;
    let outside: Vec<bool> = r.mask.iter().map(|&l| l == 0).collect();
    let depth = field::distance_transform(&outside, w, h);
    let (mut dark, mut gland, mut dark_in, mut inner) = (0usize, 0usize, 0usize, 0usize);
    for (i, &l) in r.mask.iter().enumerate() {
        if l > 0 {
            let px = &r.rgb[i * 3..i * 3 + 3];
            let mean = (px[0] as u32 + px[1] as u32 + px[2] as u32) / 3;
            let is_dark = usize::from(mean < 125);
            gland += 1;
            dark += is_dark;
            if depth[i] > INTERIOR {
                inner += 1;
                dark_in += is_dark;
            }
        }
    }
    (
        dark as f32 / gland.max(1) as f32,
        dark_in as f32 / inner.max(1) as f32,
    )
}

#[test]
fn benign_and_malignant_are_separable() {
    let atypias = [0.05, 0.18, 0.55, 0.7, 0.9];
    let (mut benign, mut malignant) = (Vec::new(), Vec::new());
    for k in 0..20u64 {
        let a = atypias[k as usize % 5];
        let m = a > 0.3;
        let r = render(&look(k, m, a));
        assert!(r.glands >= 1 && r.glands <= render::MAX_GROUPS_FOR_TESTS);
        let f = dark_nuclei_in_glands(&r, 775, 522);
        if m { malignant.push(f) } else { benign.push(f) }
    }
    eprintln!("dark nuclei in glands (all, interior): benign {benign:?} malignant {malignant:?}");
    let mean = |v: &[(f32, f32)]| v.iter().map(|p| p.0).sum::<f32>() / v.len() as f32;
    let (mb, mm) = (mean(&benign), mean(&malignant));
    assert!(
        mm > mb + 0.12,
        "dark fraction: benign {mb:.3} malignant {mm:.3}"
    );
    let max_b = benign.iter().fold(0.0f32, |a, b| a.max(b.1));
    let min_m = malignant.iter().fold(1.0f32, |a, b| a.min(b.1));
    assert!(
        min_m > max_b + 0.1,
        "interior: benign max {max_b:.3} malignant min {min_m:.3}"
    );
}

/// `cargo test --release --lib synth::tests::preview -- --ignored --nocapture`
/// renders a few images as PNG into $SYNTH_PREVIEW (default /tmp/synth-preview)
/// and prints timings.
#[test]
#[ignore]
fn preview() {
    let dir = std::env::var("SYNTH_PREVIEW").unwrap_or_else(|_| "/tmp/synth-preview".into());
    fs::create_dir_all(&dir).unwrap();
    for (k, (name, m, a)) in [
        ("healthy", false, 0.05),
        ("adenomatous", false, 0.18),
        ("moderate", true, 0.6),
        ("modpoor", true, 0.75),
        ("poor", true, 0.92),
    ]
    .into_iter()
    .enumerate()
    {
        let mut l = look(k as u64, m, a);
        if k == 4 {
            (l.width, l.height) = LARGE_SIZE;
        }
        let t = Instant::now();
        let r = render(&l);
        eprintln!(
            "{name}: {:.1} ms, {} glands",
            t.elapsed().as_secs_f64() * 1e3,
            r.glands
        );
        let img = image::RgbImage::from_raw(l.width, l.height, r.rgb).unwrap();
        img.save(format!("{dir}/{name}.png")).unwrap();
        let mask = image::GrayImage::from_raw(
            l.width,
            l.height,
            r.mask
                .iter()
                .map(|&v| v.wrapping_mul(37) | (u8::from(v > 0) * 64))
                .collect(),
        )
        .unwrap();
        mask.save(format!("{dir}/{name}_mask.png")).unwrap();
    }
    let glas = Path::new(&dir).join("glas");
    if !glas.join("Grade.csv").exists() {
        generate(&glas, &opts(12, 5)).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let s = generate(&tmp.path().join("glas"), &SynthOptions::default()).unwrap();
    eprintln!("165 images: {:.2} s, {s:?}", t.elapsed().as_secs_f64());
}
