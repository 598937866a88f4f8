use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};

use super::{
    sheet::{self, BLOCK_GAP, CAPTION, GAP, LABEL_SIZE, PAD},
    *,
};
use crate::shard::{
    Compression,
    example::PatchRecord,
    manifest::{ManifestRow, write_table},
    shard_file_name,
    writer::ShardWriter,
};

const ORIG: [[u8; 3]; 2] = [[200, 40, 40], [40, 40, 200]];
const AUG: [[u8; 3]; 2] = [[250, 150, 150], [150, 150, 250]];

/// (source image, split, patient, label)
const IMAGES: &[(&str, &str, Option<&str>, i64)] = &[
    ("b1", "train", Some("2"), 0),
    ("b2", "train", Some("10"), 0),
    ("m1", "train", Some("4"), 1),
    ("b3", "val", Some("3"), 0),
    ("m2", "val", Some("5"), 1),
    ("b4", "test", Some("2"), 0), // patient 2 is in train and test
    ("m3", "test", None, 1),
];

fn png(color: [u8; 3]) -> Vec<u8> {
    let img = RgbImage::from_pixel(32, 32, Rgb(color));
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// A prepared folder: every image gives 2 patches, train patches 1 augmented
/// copy each; train in 2 shards, val and test in 1. 20 records.
fn fixture(dir: &Path, compression: Compression) -> Vec<ManifestRow> {
    let mut records: Vec<(PatchRecord, ManifestRow)> = Vec::new();
    for &(name, split, patient, label) in IMAGES {
        let class = ["benign", "malignant"][label as usize];
        let copies = if split == "train" { 2 } else { 1 };
        for x in [0i64, 32] {
            for k in 0..copies {
                let id = records.len() as u64;
                let color = if k == 0 { ORIG } else { AUG }[label as usize];
                let augmentation = if k == 0 { "none" } else { "flip_h+hed" };
                let encoded = png(color);
                let rec = PatchRecord {
                    encoded: encoded.clone(),
                    format: "png".into(),
                    height: 32,
                    width: 32,
                    channels: 3,
                    label,
                    label_text: class.into(),
                    filename: format!("{class}/{name}.png"),
                    source_id: name.into(),
                    record_id: id as i64,
                    patient_id: patient.unwrap_or_default().into(),
                    split: split.into(),
                    subset: split.into(),
                    x,
                    y: 0,
                    size: 32,
                    scale: 1.0,
                    augmentation: augmentation.into(),
                };
                let row = ManifestRow {
                    record_id: id,
                    split: split.into(),
                    subset: split.into(),
                    fold: None,
                    shard: String::new(),
                    index_in_shard: 0,
                    byte_offset: 0,
                    record_bytes: 0,
                    source_image: name.into(),
                    filename: rec.filename.clone(),
                    patient: patient.map(str::to_string),
                    label,
                    label_text: class.into(),
                    x,
                    y: 0,
                    size: 32,
                    scale: 1.0,
                    augmentation: augmentation.into(),
                    aug_index: k,
                    seed: id,
                    sha256: String::new(),
                    format: "png".into(),
                    encoded_bytes: encoded.len() as u64,
                };
                records.push((rec, row));
            }
        }
    }
    let mut rows = Vec::new();
    for (split, shards) in [("train", 2u32), ("val", 1), ("test", 1)] {
        let members: Vec<&(PatchRecord, ManifestRow)> =
            records.iter().filter(|(_, r)| r.split == split).collect();
        let per = members.len().div_ceil(shards as usize);
        for (i, chunk) in members.chunks(per).enumerate() {
            let file = shard_file_name(split, i as u32, shards, compression);
            let mut w = ShardWriter::create(&dir.join(&file), compression).unwrap();
            for (rec, row) in chunk {
                let example = rec.encode();
                let mut row = row.clone();
                row.record_bytes = example.len() as u64;
                let loc = w.write(&example).unwrap();
                row.shard = file.clone();
                row.index_in_shard = loc.index;
                row.byte_offset = loc.offset;
                rows.push(row);
            }
            w.finish().unwrap();
        }
    }
    assert_eq!(rows.len(), 20);
    write_table(
        &mut ManifestRow::to_dataframe(&rows).unwrap(),
        &dir.join(MANIFEST_PARQUET),
    )
    .unwrap();
    rows
}

fn strings(df: &DataFrame, name: &str) -> Vec<String> {
    let c = df.column(name).unwrap();
    (0..c.len())
        .map(|i| c.get(i).unwrap().str_value().into_owned())
        .collect()
}

fn table<'a>(i: &'a Inspection, title: &str) -> &'a DataFrame {
    &i.tables.iter().find(|(t, _)| t == title).unwrap().1
}

fn opts(per_class: usize, thumb: u32) -> InspectOptions {
    InspectOptions {
        per_class,
        thumb,
        sheet: None,
    }
}

fn near(p: &Rgb<u8>, c: [u8; 3]) -> bool {
    p.0.iter().zip(c).all(|(&a, b)| a.abs_diff(b) <= 2)
}

#[test]
fn tables_count_records_patients_and_images() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), Compression::None);
    let ins = inspect(dir.path(), &opts(4, 40)).unwrap();
    let titles: Vec<&str> = ins.tables.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "records per split and class",
            "records per patient and split",
            "source images per split and class"
        ]
    );

    let t = table(&ins, "records per split and class");
    let cols: Vec<&str> = t.get_column_names().iter().map(|c| c.as_str()).collect();
    assert_eq!(
        cols,
        [
            "split",
            "label",
            "class",
            "records",
            "original",
            "augmented",
            "source images",
            "patients"
        ]
    );
    let rows: Vec<String> = (0..t.height())
        .map(|i| {
            cols.iter()
                .map(|c| {
                    t.column(c)
                        .unwrap()
                        .get(i)
                        .unwrap()
                        .str_value()
                        .into_owned()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        rows,
        [
            "train 0 benign 8 4 4 2 2",
            "train 1 malignant 4 2 2 1 1",
            "val 0 benign 2 2 0 1 1",
            "val 1 malignant 2 2 0 1 1",
            "test 0 benign 2 2 0 1 1",
            "test 1 malignant 2 2 0 1 0",
            "all null all 20 14 6 7 5",
        ]
    );

    let p = table(&ins, "records per patient and split");
    let cols: Vec<&str> = p.get_column_names().iter().map(|c| c.as_str()).collect();
    assert_eq!(cols, ["patient", "train", "val", "test", "total", "shared"]);
    assert_eq!(
        strings(p, "patient"),
        ["2", "3", "4", "5", "10", "(none)", "total"]
    );
    assert_eq!(strings(p, "train"), ["4", "0", "4", "0", "4", "0", "12"]);
    assert_eq!(strings(p, "test"), ["2", "0", "0", "0", "0", "2", "4"]);
    assert_eq!(strings(p, "total"), ["6", "2", "4", "2", "4", "2", "20"]);
    assert_eq!(
        strings(p, "shared"),
        ["true", "false", "false", "false", "false", "null", "null"]
    );

    let s = table(&ins, "source images per split and class");
    assert_eq!(strings(s, "class"), ["benign", "malignant", "all"]);
    assert_eq!(strings(s, "train"), ["2", "1", "3"]);
    assert_eq!(strings(s, "val"), ["1", "1", "2"]);
    assert_eq!(strings(s, "test"), ["1", "1", "2"]);
    assert_eq!(strings(s, "total"), ["4", "3", "7"]);

    // Polars prints them (the CLI's job), with the readable names.
    let shown = format!("{p}");
    assert!(
        shown.contains("shared") && shown.contains("(none)"),
        "{shown}"
    );
}

#[test]
fn contact_sheet_layout_and_colours() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), Compression::None);
    let (k, t) = (4u32, 40u32);
    let ins = inspect(dir.path(), &opts(k as usize, t)).unwrap();
    assert_eq!(ins.sheet_path, dir.path().join("contact_sheet.png"));
    let bytes = std::fs::read(&ins.sheet_path).unwrap();
    if let Ok(copy) = std::env::var("HISTOSHARD_SHEET_COPY") {
        std::fs::write(copy, &bytes).unwrap();
    }
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();

    // Margin: the widest label line.
    let margin = label_margin(&crate::shard::manifest::read_manifest(dir.path()).unwrap());
    assert!(margin > text_width("benign", LABEL_SIZE));
    let line = line_height(LABEL_SIZE);
    assert_eq!((CAPTION, line), (15, 17));
    let a = t * 2 / 3; // augmented thumbnails: 26
    let main_h = t + CAPTION; // 55 (> two label lines and their gap, 38)
    assert!(main_h > 2 * line + sheet::LINE_GAP);
    let aug_h = a + CAPTION; // 41
    let block = main_h + GAP + aug_h; // both classes have augmented copies
    let width = PAD + margin + GAP + k * t + (k - 1) * GAP + PAD;
    let height = PAD + 2 * block + BLOCK_GAP + PAD;
    assert_eq!(height, 242);
    assert_eq!(img.dimensions(), (width, height));

    let x0 = PAD + margin + GAP;
    let col_x = |j: u32| x0 + j * (t + GAP);
    for (c, top) in [(0usize, PAD), (1, PAD + block + BLOCK_GAP)] {
        // every main cell holds an original of this class
        for j in 0..k {
            let p = img.get_pixel(col_x(j) + t / 2, top + t / 2);
            assert!(near(p, ORIG[c]), "class {c} cell {j}: {p:?}");
            let corner = img.get_pixel(col_x(j) + 1, top + 1);
            assert!(near(corner, ORIG[c]), "thumbnail fills its cell");
        }
        // augmented row: copies below the train originals, blank elsewhere
        let ay = top + main_h + GAP + a / 2;
        let train_picks = [2, 1][c];
        for j in 0..k {
            let p = img.get_pixel(col_x(j) + t / 2, ay);
            if j < train_picks {
                assert!(near(p, AUG[c]), "class {c} aug {j}: {p:?}");
            } else {
                assert_eq!(*p, sheet::BACKGROUND, "class {c} aug {j}");
            }
        }
        // the label margin has ink
        let ink = (top..top + line)
            .flat_map(|y| (PAD..PAD + margin).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
            .count();
        assert!(ink > 50, "class {c} label: {ink} dark pixels");
    }

    // deterministic, and the same from gzip shards
    let again = inspect(dir.path(), &opts(k as usize, t)).unwrap();
    assert_eq!(std::fs::read(&again.sheet_path).unwrap(), bytes);
    let gz = tempfile::tempdir().unwrap();
    fixture(gz.path(), Compression::Gzip);
    assert!(gz.path().join("train-00000-of-00002.tfrecord.gz").exists());
    let sheet = gz.path().join("elsewhere.png");
    let ins = inspect(
        gz.path(),
        &InspectOptions {
            sheet: Some(sheet.clone()),
            ..opts(k as usize, t)
        },
    )
    .unwrap();
    assert_eq!(ins.sheet_path, sheet);
    assert_eq!(std::fs::read(&sheet).unwrap(), bytes);
    assert!(!gz.path().join(SHEET_FILE).exists());
}

#[test]
fn picks_prefer_originals_spread_over_images_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture(dir.path(), Compression::None);
    let picks = sheet::pick(&rows, 4);
    assert_eq!(picks.len(), 2);
    let summary = |c: &sheet::ClassPicks| -> Vec<(String, String)> {
        c.main
            .iter()
            .map(|r| (r.split.clone(), r.source_image.clone()))
            .collect()
    };
    let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // benign: 4 images, one each, train → val → test
    assert_eq!(
        summary(&picks[0]),
        s(&[
            ("train", "b1"),
            ("train", "b2"),
            ("val", "b3"),
            ("test", "b4")
        ])
    );
    // malignant: 3 images for 4 picks: the middle one (m2) gives two
    assert_eq!(
        summary(&picks[1]),
        s(&[
            ("train", "m1"),
            ("val", "m2"),
            ("val", "m2"),
            ("test", "m3")
        ])
    );
    assert!(picks.iter().flat_map(|c| &c.main).all(|r| r.aug_index == 0));
    // augmented copies sit under their own original
    for c in &picks {
        for (m, a) in c.main.iter().zip(&c.augmented) {
            if let Some(a) = a {
                assert!(a.aug_index > 0);
                assert_eq!((&a.source_image, a.x), (&m.source_image, m.x));
            }
        }
    }
    // more thumbnails than originals: filled up with augmented records
    let picks = sheet::pick(&rows, 8);
    assert_eq!(picks[1].main.len(), 8);
    assert_eq!(picks[1].main.iter().filter(|r| r.aug_index > 0).count(), 2);
    let ids: BTreeSet<u64> = picks[1].main.iter().map(|r| r.record_id).collect();
    assert_eq!(ids.len(), 8, "no record shown twice");
    assert!(
        picks[1]
            .augmented
            .iter()
            .flatten()
            .all(|r| !ids.contains(&r.record_id))
    );
}

#[test]
fn spread_over_many_images() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(dir.path(), Compression::None).remove(0);
    // one class, 10 images of 5 patches, no copies
    let rows: Vec<ManifestRow> = (0..50)
        .map(|i| ManifestRow {
            record_id: i,
            source_image: format!("img{}", i / 5),
            aug_index: 0,
            x: (i % 5) as i64,
            ..base.clone()
        })
        .collect();
    let picks = sheet::pick(&rows, 4);
    let imgs: Vec<&str> = picks[0]
        .main
        .iter()
        .map(|r| r.source_image.as_str())
        .collect();
    assert_eq!(imgs, ["img1", "img3", "img6", "img8"]);
    assert!(picks[0].augmented.is_empty());
    let picks = sheet::pick(&rows, 12);
    let per_image = picks[0]
        .main
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, r| {
            *m.entry(&r.source_image).or_default() += 1;
            m
        });
    assert_eq!(per_image.len(), 10);
    assert_eq!(per_image.values().filter(|&&n| n == 2).count(), 2);
    // within an image, two picks are spread: patches 1 and 3 of 0..5
    let twice = per_image.iter().find(|(_, n)| **n == 2).unwrap().0;
    let xs: Vec<i64> = picks[0]
        .main
        .iter()
        .filter(|r| r.source_image == *twice)
        .map(|r| r.x)
        .collect();
    assert_eq!(xs, [1, 3]);
}

#[test]
fn missing_manifest_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = inspect(dir.path(), &InspectOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&dir.path().join("manifest.parquet").display().to_string())
            && msg.contains("not a complete histoshard data set"),
        "{msg}"
    );
    assert!(!dir.path().join(SHEET_FILE).exists());
    let err = inspect(dir.path(), &opts(0, 112)).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[test]
fn corrupt_or_missing_records_are_errors_naming_shard_and_record() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), Compression::None);
    // val holds b3 (records 0, 1) and m2 (2, 3); the sheet wants 1, 2, 3.
    let shard = dir.path().join("val-00000-of-00001.tfrecord");
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 20; // inside record 3's data
    bad[at] ^= 0x55;
    std::fs::write(&shard, &bad).unwrap();
    let err = inspect(dir.path(), &opts(4, 40)).unwrap_err().to_string();
    assert!(
        err.contains("val-00000-of-00001.tfrecord: record 3") && err.contains("CRC"),
        "{err}"
    );
    assert!(!dir.path().join(SHEET_FILE).exists(), "no sheet on error");

    // a shard that ends early
    let frames: usize = 3;
    let mut offset = 0usize;
    for _ in 0..frames {
        let len = u64::from_le_bytes(good[offset..offset + 8].try_into().unwrap()) as usize;
        offset += 8 + 4 + len + 4;
    }
    std::fs::write(&shard, &good[..offset]).unwrap();
    let err = inspect(dir.path(), &opts(4, 40)).unwrap_err().to_string();
    assert!(err.contains("record 3: missing"), "{err}");

    std::fs::remove_file(&shard).unwrap();
    let err = inspect(dir.path(), &opts(4, 40)).unwrap_err().to_string();
    assert!(err.contains("val-00000-of-00001.tfrecord"), "{err}");
}

#[test]
fn empty_manifest_gives_total_rows_and_a_note() {
    let dir = tempfile::tempdir().unwrap();
    write_table(
        &mut ManifestRow::to_dataframe(&[]).unwrap(),
        &dir.path().join(MANIFEST_PARQUET),
    )
    .unwrap();
    let ins = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(
        strings(table(&ins, "records per split and class"), "records"),
        ["0"]
    );
    assert_eq!(
        strings(table(&ins, "records per patient and split"), "patient"),
        ["total"]
    );
    let img = image::open(&ins.sheet_path).unwrap();
    assert_eq!(img.height(), 2 * PAD + line_height(LABEL_SIZE));
}

/// The sheet's label margin for a benign/malignant manifest with augmented
/// copies: the widest of the class names, "N records" and "augmented".
fn label_margin(rows: &[ManifestRow]) -> u32 {
    let benign = rows.iter().filter(|r| r.label == 0).count();
    [
        "benign".to_string(),
        "malignant".to_string(),
        "augmented".to_string(),
        format!("{benign} records"),
        format!("{} records", rows.len() - benign),
    ]
    .iter()
    .map(|l| text_width(l, LABEL_SIZE))
    .max()
    .unwrap_or(0)
}

#[test]
fn sheet_text_is_the_embedded_font() {
    // Class names as written (mixed case, accents), anti-aliased on the sheet's
    // background: ink, part-covered pixels, and clear padding.
    let bg = sheet::BACKGROUND;
    let img = render_text("Adénome", LABEL_SIZE, 3, Rgb([34, 34, 34]), bg);
    assert_eq!(
        img.dimensions(),
        (
            text_width("Adénome", LABEL_SIZE) + 6,
            line_height(LABEL_SIZE) + 6
        )
    );
    let dark = img.pixels().filter(|p| p.0[0] < 100).count();
    let between = img
        .pixels()
        .filter(|p| p.0[0] > 34 && p.0[0] < bg.0[0])
        .count();
    assert!(
        dark > 60 && between > 20,
        "{dark} dark, {between} part-covered"
    );
    assert_eq!(*img.get_pixel(0, 0), bg, "padding stays clear");
}

/// A tissue-like texture: pink stroma with purple "nuclei", hue per class.
fn tissue(w: u32, h: u32, class: usize, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let wave = ((fx * 0.07 + seed as f32).sin() * (fy * 0.05 - seed as f32).cos() + 1.0) / 2.0;
        let cell = (x / 24 + y / 24 + seed).is_multiple_of(5)
            && ((x % 24) as i32 - 12).pow(2) + ((y % 24) as i32 - 12).pow(2) < 60;
        if cell {
            [Rgb([90, 40, 140]), Rgb([60, 20, 90])][class]
        } else {
            let base = [[235.0, 170.0, 200.0], [215.0, 120.0, 170.0]][class];
            Rgb(base.map(|c: f32| (c - 40.0 * wave) as u8))
        }
    })
}

#[test]
fn inspects_what_prepare_wrote() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    for (class, name) in ["benign", "malignant"].iter().enumerate() {
        std::fs::create_dir_all(input.join(name)).unwrap();
        for i in 0..5 {
            tissue(256, 192, class, i)
                .save(input.join(name).join(format!("{name}_{i}.png")))
                .unwrap();
        }
    }
    let out = root.path().join("out");
    let mut p = crate::prepare::PrepareOptions::new(&input, &out);
    p.patch_size = 64;
    p.stride = 64;
    p.min_tissue = 0.0;
    p.augment = 2;
    p.shards = Some(2);
    p.compression = Compression::Gzip;
    p.val_fraction = 0.2;
    p.test_fraction = 0.2;
    crate::prepare::run(&p, &crate::progress::Progress::hidden()).unwrap();

    let ins = inspect(&out, &InspectOptions::default()).unwrap();
    let rows = crate::shard::manifest::read_manifest(&out).unwrap();
    let t = table(&ins, "records per split and class");
    assert_eq!(
        strings(t, "records").last().unwrap(),
        &rows.len().to_string()
    );
    let img = image::open(&ins.sheet_path).unwrap();
    if let Ok(copy) = std::env::var("HISTOSHARD_E2E_SHEET_COPY") {
        std::fs::copy(&ins.sheet_path, copy).unwrap();
        for (title, df) in &ins.tables {
            println!("{title}\n{df}");
        }
    }
    // 8 thumbnails of 112 px per class, two classes with augmented rows
    let margin = label_margin(&rows);
    assert_eq!(img.width(), 2 * PAD + margin + GAP + 8 * 112 + 7 * GAP);
    let block = 112 + CAPTION + GAP + 74 + CAPTION;
    assert_eq!(img.height(), 2 * PAD + 2 * block + BLOCK_GAP);
}
