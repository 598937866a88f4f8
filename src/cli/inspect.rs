use std::{path::PathBuf, process::ExitCode};

use histoshard::inspect::{self, InspectOptions};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder written by `histoshard prepare`, or its URL (`s3://bucket/prefix`, …: fetched into the cache; the sheet is written there unless --sheet).
    dir: PathBuf,
    /// Thumbnails per class on the contact sheet.
    #[arg(long, default_value_t = 8)]
    per_class: usize,
    /// Thumbnail side in pixels.
    #[arg(long, default_value_t = 112)]
    thumb: u32,
    /// Where to write the contact sheet [default: DIR/contact_sheet.png].
    #[arg(long)]
    sheet: Option<PathBuf>,
}

pub fn run(a: Args, _g: &Global) -> anyhow::Result<ExitCode> {
    // Polars prints 10 rows unless told otherwise; the patient table is longer.
    // SAFETY: set before any other thread of this process exists.
    unsafe { std::env::set_var("POLARS_FMT_MAX_ROWS", "-1") };
    let opts = InspectOptions {
        per_class: a.per_class,
        thumb: a.thumb,
        sheet: a.sheet,
    };
    let dir = super::data_dir(&a.dir, false)?;
    let inspection = inspect::inspect(&dir, &opts)?;
    for (title, df) in &inspection.tables {
        println!("{title}\n{df}\n");
    }
    println!("contact sheet: {}", inspection.sheet_path.display());
    Ok(ExitCode::SUCCESS)
}
