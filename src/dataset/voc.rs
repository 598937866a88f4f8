//! labelImg Pascal-VOC: one `.xml` per image, anywhere under the input folder.
//!
//! From each `<annotation>` we read `<filename>` (resolved relative to the
//! XML's own folder; for the classic VOC tree, `Annotations/x.xml` may also
//! point into the sibling `JPEGImages/`) and every `<object>` with its
//! `<name>` and `<bndbox>`. `<path>` is ignored: labelImg fills it with the
//! annotator's absolute path. `<folder>` and `<size>` are ignored too: the
//! image header gives the size.
//!
//! Boxes are pixel edges `[xmin, xmax) × [ymin, ymax)`, rounded when written as
//! floats, and clamped to the image. One sample per (image, class): named after
//! the image's path without extension (`sub/img`), or `sub/img#class` when the
//! image has objects of several classes.
//!
//! Skipped with a reason (not errors): XMLs without any `<object>`, images no
//! XML refers to, and other files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use roxmltree::Node;

use super::common::{self, IMAGE_EXTENSIONS};
use super::walk;
use super::{BBox, Dataset, Layout, Sample, Skipped, image_io};
use crate::error::{Error, Result};
use crate::fsutil;

/// Annotation files larger than this are refused (labelImg's are ~1 KiB).
pub const MAX_XML_BYTES: u64 = 16 * 1024 * 1024;

/// Elements nested deeper than this are refused before parsing: labelImg
/// nests 4 deep (`annotation/object/bndbox/xmin`), and the XML parser
/// recurses once per level on a worker thread's small stack (a 28 KB file
/// nested 4,000 deep overflowed it and aborted the process).
pub const MAX_XML_DEPTH: usize = 64;

/// Attributes allowed on one element (labelImg writes at most one): the
/// parser checks each attribute against the element's earlier ones, so
/// 100,000 attributes on one element (a 1 MB file) took 18 s, and the 16 MiB
/// a file may have would take hours.
pub const MAX_XML_ATTRIBUTES: usize = 64;

/// Parsed nodes (elements and text) allowed in one annotation: a labelImg
/// object is ~25, so this is ~40,000 objects, and bounds the parser's memory
/// (a node is ~80 bytes; 16 MiB of `<a/>` would otherwise be 4 million).
pub const MAX_XML_NODES: u32 = 1_000_000;

/// What one XML gave.
enum Outcome {
    /// Samples for one image.
    Samples(Vec<Sample>),
    /// No `<object>`: skipped; the image path (lexical) it named, if any.
    NoObjects(Option<PathBuf>),
}

/// Reads `input`; `output`, when it lies inside, is never read.
pub fn load(input: &Path, output: Option<&Path>) -> Result<Dataset> {
    common::require_dir(input, "the Pascal-VOC layout is a folder of .xml files")?;
    let root_canon = common::canonical_root(input)?;
    let ex = walk::Exclude::for_root(output, input)?;
    let walk = walk::walk_files(input, &ex)?;
    let files = walk.files;
    let xmls: Vec<&PathBuf> = files
        .iter()
        .filter(|p| common::ext_lower(p).as_deref() == Some("xml"))
        .collect();
    if xmls.is_empty() {
        return Err(Error::input(
            input,
            "no .xml annotation files found (expected labelImg Pascal-VOC files next to the images)",
        ));
    }

    let outcomes: Vec<Result<Outcome>> = xmls
        .par_iter()
        .map(|xml| read_one(input, &root_canon, &ex, xml))
        .collect();

    let mut samples = Vec::new();
    let mut skipped = walk.skipped;
    let mut referenced: HashSet<PathBuf> = HashSet::new();
    let mut annotated_by: HashMap<String, &Path> = HashMap::new();
    for (xml, outcome) in xmls.iter().zip(outcomes) {
        match outcome? {
            Outcome::Samples(s) => {
                let Some(first) = s.first() else { continue };
                if let Some(prev) = annotated_by.insert(first.rel_path.clone(), xml) {
                    return Err(Error::input(
                        xml,
                        format!(
                            "<filename>: {} is also annotated by {}; keep one annotation per image",
                            first.rel_path,
                            prev.display()
                        ),
                    ));
                }
                referenced.insert(first.image_path.clone());
                samples.extend(s);
            }
            Outcome::NoObjects(image) => {
                if let Some(image) = image {
                    referenced.insert(image);
                }
                skipped.push(Skipped {
                    file: (*xml).clone(),
                    reason: "no <object>".into(),
                });
            }
        }
    }
    for f in &files {
        if common::ext_lower(f).as_deref() == Some("xml") || referenced.contains(f) {
            continue;
        }
        let reason = if common::is_image_file_name(f) {
            "image without a .xml annotation"
        } else {
            "not an image or a .xml annotation"
        };
        skipped.push(Skipped {
            file: f.clone(),
            reason: reason.into(),
        });
    }
    common::finish(Layout::Voc, input, samples, skipped, None, false)
}

/// The first child element of `node` called `name`.
fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The trimmed text of `node`'s child `name`, when present and not blank.
fn child_text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What one annotation says, before any file it names is looked up.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    /// `<filename>`, trimmed; `None` when missing or blank (only allowed
    /// without objects).
    pub filename: Option<String>,
    /// Every `<object>`, in document order.
    pub objects: Vec<VocObject>,
}

/// One `<object>`: its class and its `<bndbox>`.
#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    /// `<name>`, trimmed, not empty.
    pub name: String,
    /// `xmin, ymin, xmax, ymax`, finite and rounded, not yet checked against the image.
    pub coords: [f64; 4],
}

/// Parses the bytes of a labelImg annotation and checks everything that can be
/// checked without the image. Touches no file; `xml` only names it in errors.
pub fn parse_annotation(bytes: &[u8], xml: &Path) -> Result<Annotation> {
    let size = bytes.len() as u64;
    if size > MAX_XML_BYTES {
        return Err(Error::input(
            xml,
            format!("{size} bytes, too large for an annotation (limit {MAX_XML_BYTES})"),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::input(xml, "not UTF-8 text; save the annotation as UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match shape_fault(text.as_bytes(), MAX_XML_DEPTH, MAX_XML_ATTRIBUTES) {
        None => {}
        Some((line, Shape::Deep)) => {
            return Err(Error::input(
                xml,
                format!(
                    "line {line}: elements nested more than {MAX_XML_DEPTH} deep (a labelImg annotation nests 4); refused before parsing"
                ),
            ));
        }
        Some((line, Shape::Attributes)) => {
            return Err(Error::input(
                xml,
                format!(
                    "line {line}: an element with more than {MAX_XML_ATTRIBUTES} attributes (labelImg writes at most one); refused before parsing"
                ),
            ));
        }
    }
    let options = roxmltree::ParsingOptions {
        nodes_limit: MAX_XML_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => Error::input(
            xml,
            format!("more than {MAX_XML_NODES} XML nodes, too many for an annotation"),
        ),
        e => Error::input(xml, format!("malformed XML: {e}")),
    })?;
    let ann = doc.root_element();
    if ann.tag_name().name() != "annotation" {
        return Err(Error::input(
            xml,
            format!(
                "root element is <{}>, expected <annotation> (Pascal-VOC)",
                ann.tag_name().name()
            ),
        ));
    }
    let filename = child_text(ann, "filename").map(str::to_string);
    let nodes: Vec<Node> = ann
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "object")
        .collect();
    if !nodes.is_empty() && filename.is_none() {
        return Err(Error::input(xml, "no <filename> (or it is empty)"));
    }
    let mut objects = Vec::with_capacity(nodes.len());
    for (i, obj) in nodes.iter().enumerate() {
        let index = i + 1;
        let name = child_text(*obj, "name")
            .ok_or_else(|| Error::input(xml, format!("object {index}: missing <name>")))?;
        let at = |msg: String| Error::input(xml, format!("object {index} (\"{name}\"): {msg}"));
        let bndbox = child(*obj, "bndbox").ok_or_else(|| at("missing <bndbox>".to_string()))?;
        let mut coords = [0.0f64; 4];
        for (slot, tag) in coords.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let t = child_text(bndbox, tag).ok_or_else(|| at(format!("missing <{tag}>")))?;
            *slot = common::parse_coord(t, tag).map_err(at)?;
        }
        objects.push(VocObject {
            name: name.to_string(),
            coords,
        });
    }
    Ok(Annotation { filename, objects })
}

/// What [`shape_fault`] found wrong with an XML file's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A start tag nested deeper than the limit.
    Deep,
    /// A start tag with more `=` (outside quotes) than the attribute limit.
    Attributes,
}

/// The 1-based line of the first start tag nested deeper than `max_depth`,
/// or holding more than `max_attributes` attributes, if any, found by a scan
/// that counts start and end tags, and `=` inside start tags, without
/// parsing (comments, CDATA, processing instructions and declarations
/// skipped, quotes inside tags honoured). On well-formed XML it counts
/// exactly what a parser nests and at least the attributes it sees (every
/// attribute has its `=`); on malformed XML a parser stops at the first
/// fault, within the prefix counted the same way, so it never goes further
/// than counted.
fn shape_fault(text: &[u8], max_depth: usize, max_attributes: usize) -> Option<(usize, Shape)> {
    let line_at = |i: usize| 1 + text[..i].iter().filter(|&&b| b == b'\n').count();
    let find = |from: usize, pat: &[u8]| -> usize {
        text.get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
            .map_or(text.len(), |p| from + p + pat.len())
    };
    let (mut i, mut depth) = (0, 0usize);
    while let Some(p) = text[i..].iter().position(|&b| b == b'<') {
        i += p;
        let rest = &text[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = find(i + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(i + 2, b">");
        } else {
            // A start tag: to its `>`, skipping quoted attribute values.
            let (mut j, mut quote, mut equals) = (i + 1, None, 0usize);
            while j < text.len() {
                let c = text[j];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => break,
                    None if c == b'=' => {
                        equals += 1;
                        if equals > max_attributes {
                            return Some((line_at(i), Shape::Attributes));
                        }
                    }
                    None => {}
                }
                j += 1;
            }
            let self_closing = j < text.len() && text[j - 1] == b'/';
            if !self_closing {
                depth += 1;
                if depth > max_depth {
                    return Some((line_at(i), Shape::Deep));
                }
            }
            i = j.saturating_add(1).min(text.len());
        }
    }
    None
}

fn read_one(root: &Path, root_canon: &Path, ex: &walk::Exclude, xml: &Path) -> Result<Outcome> {
    let bytes = fsutil::read_limited(xml, MAX_XML_BYTES, "an annotation")?;
    let ann = parse_annotation(&bytes, xml)?;

    let xml_dir = common::parent_or_dot(xml);
    if ann.objects.is_empty() {
        let image = ann.filename.map(|f| xml_dir.join(f.replace('\\', "/")));
        return Ok(Outcome::NoObjects(image));
    }
    let filename = ann
        .filename
        .as_deref()
        .ok_or_else(|| Error::input(xml, "no <filename> (or it is empty)"))?;

    // Where to resolve <filename> from: the XML's folder, or for
    // `Annotations/x.xml` the sibling `JPEGImages/` when the image is there.
    let mut base_rel = common::rel_string(root, &xml_dir)?;
    let normalized = filename.replace('\\', "/");
    if !xml_dir.join(&normalized).exists()
        && xml_dir
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("Annotations"))
    {
        let sibling = xml_dir.with_file_name("JPEGImages");
        if sibling.join(&normalized).exists() {
            base_rel = common::rel_string(root, &sibling)?;
        }
    }
    let resolved =
        common::resolve_inside(root, root_canon, ex, &base_rel, filename, xml, "<filename>")?;
    if !common::is_image_file_name(&resolved.image_path) {
        return Err(Error::input(
            xml,
            format!(
                "<filename> \"{filename}\" is not an image file (expected {})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    let dims = image_io::dimensions(&resolved.image_path)?;

    let mut by_class: BTreeMap<String, Vec<BBox>> = BTreeMap::new();
    for (i, obj) in ann.objects.into_iter().enumerate() {
        let b = common::make_box(obj.coords, dims)
            .map_err(|m| Error::input(xml, format!("object {} (\"{}\"): {m}", i + 1, obj.name)))?;
        by_class.entry(obj.name).or_default().push(b);
    }
    let base = common::strip_ext(&resolved.rel_path).to_string();
    Ok(Outcome::Samples(common::samples_per_class(
        &base,
        &resolved.image_path,
        &resolved.rel_path,
        by_class,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::dataset::common::write_test_image as img;

    fn obj(name: &str, b: [&str; 4]) -> String {
        format!(
            "<object><name>{name}</name><pose>Unspecified</pose><difficult>0</difficult>\
             <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
            b[0], b[1], b[2], b[3]
        )
    }

    fn xml(filename: &str, objects: &[String]) -> String {
        format!(
            "<annotation>\n<folder>imgs</folder>\n<filename>{filename}</filename>\n\
             <path>C:\\Users\\someone\\imgs\\{filename}</path>\n\
             <size><width>1</width><height>1</height><depth>3</depth></size>\n{}\n</annotation>\n",
            objects.join("\n")
        )
    }

    fn err(dir: &Path) -> String {
        load(dir, None).unwrap_err().to_string()
    }

    #[test]
    fn two_classes_give_two_samples() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("a.png"), 100, 80);
        img(&r.join("b.jpg"), 50, 50);
        fs::write(
            r.join("a.xml"),
            xml(
                "a.png",
                &[
                    obj("gland", ["10", "10", "40", "40"]),
                    obj("tumour", ["50.4", "20.6", "500", "79"]),
                    obj("gland", ["0", "0", "5", "5"]),
                ],
            ),
        )
        .unwrap();
        fs::write(
            r.join("b.xml"),
            xml("b.jpg", &[obj("gland", ["1", "2", "3", "4"])]),
        )
        .unwrap();
        fs::write(r.join("notes.txt"), "hi").unwrap();
        img(&r.join("c.png"), 10, 10);

        let ds = load(r, None).unwrap();
        assert_eq!(ds.layout, Layout::Voc);
        assert_eq!(ds.classes, ["gland", "tumour"]);
        let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a#gland", "a#tumour", "b"]);
        let g = &ds.samples[0];
        assert_eq!(g.class, "gland");
        assert_eq!(g.rel_path, "a.png");
        assert_eq!(g.image_path, r.join("a.png"));
        assert_eq!(
            g.boxes,
            [
                BBox {
                    xmin: 10,
                    ymin: 10,
                    xmax: 40,
                    ymax: 40
                },
                BBox {
                    xmin: 0,
                    ymin: 0,
                    xmax: 5,
                    ymax: 5
                }
            ]
        );
        // Rounded and clamped to the 100×80 image.
        assert_eq!(
            ds.samples[1].boxes,
            [BBox {
                xmin: 50,
                ymin: 21,
                xmax: 100,
                ymax: 79
            }]
        );
        let skipped: Vec<(String, &str)> = ds
            .skipped
            .iter()
            .map(|s| {
                (
                    s.file.file_name().unwrap().to_string_lossy().into_owned(),
                    s.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            skipped,
            [
                ("c.png".to_string(), "image without a .xml annotation"),
                ("notes.txt".to_string(), "not an image or a .xml annotation"),
            ]
        );
    }

    #[test]
    fn parsing_needs_no_files() {
        let p = Path::new("nowhere/a.xml");
        let text = xml("missing.png", &[obj("gland", ["1.4", "2", "30", "40.5"])]);
        let ann = parse_annotation(format!("\u{feff}{text}").as_bytes(), p).unwrap();
        assert_eq!(ann.filename.as_deref(), Some("missing.png"));
        assert_eq!(
            ann.objects,
            [VocObject {
                name: "gland".into(),
                coords: [1.0, 2.0, 30.0, 41.0],
            }]
        );
        let e = parse_annotation(b"<annotation><object/></annotation>", p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nowhere/a.xml: no <filename> (or it is empty)"
        );
        let big = vec![b' '; MAX_XML_BYTES as usize + 1];
        assert!(
            parse_annotation(&big, p)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(
            parse_annotation(b"\xff<annotation/>", p)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn subfolders_and_voc_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("set1/x.png"), 20, 20);
        fs::write(
            r.join("set1/x.xml"),
            xml("x.png", &[obj("a", ["1", "1", "9", "9"])]),
        )
        .unwrap();
        img(&r.join("VOC/JPEGImages/000001.jpg"), 20, 20);
        fs::create_dir_all(r.join("VOC/Annotations")).unwrap();
        fs::write(
            r.join("VOC/Annotations/000001.xml"),
            xml("000001.jpg", &[obj("b", ["1", "1", "9", "9"])]),
        )
        .unwrap();
        let ds = load(r, None).unwrap();
        let got: Vec<(&str, &str)> = ds
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.rel_path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("VOC/JPEGImages/000001", "VOC/JPEGImages/000001.jpg"),
                ("set1/x", "set1/x.png")
            ]
        );
    }

    #[test]
    fn no_objects_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("a.png"), 10, 10);
        img(&r.join("b.png"), 10, 10);
        fs::write(r.join("a.xml"), xml("a.png", &[])).unwrap();
        fs::write(
            r.join("b.xml"),
            xml("b.png", &[obj("x", ["1", "1", "5", "5"])]),
        )
        .unwrap();
        let ds = load(r, None).unwrap();
        assert_eq!(ds.samples.len(), 1);
        assert_eq!(ds.skipped.len(), 1);
        assert_eq!(ds.skipped[0].file, r.join("a.xml"));
        assert_eq!(ds.skipped[0].reason, "no <object>");

        fs::remove_file(r.join("b.xml")).unwrap();
        let e = err(r);
        assert!(
            e.contains("no images found") && e.contains("no <object>"),
            "{e}"
        );
    }

    #[test]
    fn path_traversal_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let r = outer.path().join("data");
        fs::create_dir(&r).unwrap();
        img(&outer.path().join("secret.png"), 10, 10);
        let o = [obj("x", ["1", "1", "5", "5"])];

        fs::write(r.join("a.xml"), xml("../secret.png", &o)).unwrap();
        let e = err(&r);
        assert!(
            e.contains("a.xml: <filename>: \"../secret.png\" contains \"..\""),
            "{e}"
        );

        fs::write(r.join("a.xml"), xml("..\\secret.png", &o)).unwrap();
        assert!(err(&r).contains("contains \"..\""));

        fs::write(r.join("a.xml"), xml("/etc/passwd", &o)).unwrap();
        let e = err(&r);
        assert!(
            e.contains("a.xml: <filename>: \"/etc/passwd\" is an absolute path"),
            "{e}"
        );

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outer.path().join("secret.png"), r.join("link.png"))
                .unwrap();
            fs::write(r.join("a.xml"), xml("link.png", &o)).unwrap();
            let e = err(&r);
            assert!(
                e.contains("a.xml: <filename>: \"link.png\" resolves to"),
                "{e}"
            );
            assert!(e.contains("outside"), "{e}");
        }
    }

    #[test]
    fn bad_boxes_name_the_object() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("a.png"), 100, 50);
        let cases = [
            (
                ["30", "10", "20", "40"],
                "object 2 (\"bad\"): inverted or empty box",
            ),
            (
                ["-3", "10", "20", "40"],
                "object 2 (\"bad\"): negative coordinate",
            ),
            (
                ["100", "10", "120", "40"],
                "object 2 (\"bad\"): box (100, 10)–(120, 40) lies wholly outside the 100×50 image",
            ),
            (
                ["1", "x1", "20", "40"],
                "object 2 (\"bad\"): ymin \"x1\" is not a number",
            ),
        ];
        for (b, want) in cases {
            let o = [obj("ok", ["1", "1", "5", "5"]), obj("bad", b)];
            fs::write(r.join("a.xml"), xml("a.png", &o)).unwrap();
            let e = err(r);
            assert!(e.contains("a.xml: ") && e.contains(want), "{want}: {e}");
        }
        fs::write(
            r.join("a.xml"),
            "<annotation><filename>a.png</filename><object><name>q</name></object></annotation>",
        )
        .unwrap();
        assert!(err(r).contains("a.xml: object 1 (\"q\"): missing <bndbox>"));
        fs::write(
            r.join("a.xml"),
            "<annotation><filename>a.png</filename><object><bndbox/></object></annotation>",
        )
        .unwrap();
        assert!(err(r).contains("a.xml: object 1: missing <name>"));
    }

    /// The line of the first start tag nested deeper than `limit`.
    fn deeper_than(text: &[u8], limit: usize) -> Option<usize> {
        shape_fault(text, limit, usize::MAX).map(|(line, shape)| {
            assert_eq!(shape, Shape::Deep);
            line
        })
    }

    #[test]
    fn attributes_are_counted_without_parsing() {
        let tag = |n: usize| {
            let attrs: Vec<String> = (0..n).map(|i| format!("a{i}='='")).collect();
            format!("<annotation><x {}/></annotation>", attrs.join(" "))
        };
        // `=` inside quotes is not an attribute.
        assert_eq!(shape_fault(tag(64).as_bytes(), 64, 64), None);
        assert_eq!(
            shape_fault(tag(65).as_bytes(), 64, 64),
            Some((1, Shape::Attributes))
        );
        // 100,000 attributes on one element took the parser 18 s.
        let e = parse_annotation(tag(100_000).as_bytes(), Path::new("m.xml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.xml: line 1: an element with more than 64 attributes (labelImg writes at most one); refused before parsing"
        );
    }

    #[test]
    fn nesting_depth_is_counted_without_parsing() {
        let nest = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert_eq!(deeper_than(nest(64).as_bytes(), 64), None);
        assert_eq!(deeper_than(nest(65).as_bytes(), 64), Some(1));
        // Siblings do not add up; closing tags and self-closing ones count right.
        let siblings = "<a><b/><b></b><b x=\"/\"/></a>".repeat(100);
        assert_eq!(deeper_than(siblings.as_bytes(), 2), None);
        assert_eq!(deeper_than(siblings.as_bytes(), 1), Some(1));
        assert_eq!(deeper_than(b"<a><b x='/'></b></a>", 1), Some(1));
        // Comments, CDATA, processing instructions and quoted `>` hide nothing
        // and add nothing; the line of the offending tag is reported.
        let tricky = "<a>\n<!-- <b><b> --><![CDATA[<b><b>]]><?p <b>?><c q='>' r=\"<\">\n<d>";
        assert_eq!(deeper_than(tricky.as_bytes(), 2), Some(3));
        assert_eq!(deeper_than(tricky.as_bytes(), 3), None);
        // Unterminated constructs end the scan (a start tag still counts).
        for (cut, want) in [
            ("<a", Some(1)),
            ("<a q='>", Some(1)),
            ("<!--<a>", None),
            ("<![CDATA[<a>", None),
            ("<?<a>", None),
            ("<!", None),
            ("</", None),
        ] {
            assert_eq!(deeper_than(cut.as_bytes(), 0), want, "{cut}");
        }
    }

    #[test]
    fn deep_and_huge_annotations_are_refused_before_parsing() {
        let p = Path::new("d.xml");
        // 4,000 deep overflowed a rayon worker's stack; a 256 KiB stack is plenty now.
        let deep = format!(
            "<annotation>\n{}{}</annotation>",
            "<a>".repeat(4000),
            "</a>".repeat(4000)
        );
        let e = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                parse_annotation(deep.as_bytes(), p)
                    .unwrap_err()
                    .to_string()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            e,
            "d.xml: line 2: elements nested more than 64 deep (a labelImg annotation nests 4); refused before parsing"
        );
        let many = format!(
            "<annotation>{}</annotation>",
            "<a/>".repeat(MAX_XML_NODES as usize)
        );
        let e = parse_annotation(many.as_bytes(), p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "d.xml: more than 1000000 XML nodes, too many for an annotation"
        );
    }

    #[test]
    fn malformed_and_wrong_xml() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("a.png"), 10, 10);
        fs::write(r.join("a.xml"), "<annotation><filename>a.png</filename>").unwrap();
        let e = err(r);
        assert!(e.contains("a.xml: malformed XML:"), "{e}");
        assert!(!e.contains('\n'));

        fs::write(r.join("a.xml"), "<svg></svg>").unwrap();
        assert!(err(r).contains("a.xml: root element is <svg>, expected <annotation>"));

        // External entities are refused by the parser, never fetched.
        fs::write(
            r.join("a.xml"),
            "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\
             <annotation><filename>&x;</filename></annotation>",
        )
        .unwrap();
        assert!(err(r).contains("a.xml: malformed XML:"));

        fs::write(
            r.join("a.xml"),
            xml("missing.png", &[obj("x", ["1", "1", "5", "5"])]),
        )
        .unwrap();
        let e = err(r);
        assert!(
            e.contains("a.xml: <filename>: image \"missing.png\" not found"),
            "{e}"
        );

        fs::write(
            r.join("a.xml"),
            xml("a.xml", &[obj("x", ["1", "1", "5", "5"])]),
        )
        .unwrap();
        assert!(err(r).contains("is not an image file"));

        fs::write(r.join("a.png"), b"not a png").unwrap();
        fs::write(
            r.join("a.xml"),
            xml("a.png", &[obj("x", ["1", "1", "5", "5"])]),
        )
        .unwrap();
        assert!(err(r).contains("a.png: not a supported image"));
    }

    #[test]
    fn one_image_two_xmls_and_empty_folder() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(err(r).contains("no .xml annotation files found"));
        img(&r.join("a.png"), 10, 10);
        let o = [obj("x", ["1", "1", "5", "5"])];
        fs::write(r.join("a.xml"), xml("a.png", &o)).unwrap();
        fs::write(r.join("b.xml"), xml("a.png", &o)).unwrap();
        let e = err(r);
        assert!(
            e.contains("b.xml: <filename>: a.png is also annotated by"),
            "{e}"
        );
    }
}
