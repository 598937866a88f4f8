//! Appending rendered records to their shards in record-id order.
//!
//! A shard that is full is finished — flushed, synced, renamed into place and
//! recorded for resuming — on a second thread, in order, while the writer
//! goes on with the next shard. The syncs took ~60 ms of a one-second
//! `prepare` when the writer waited for them, and the render workers waited
//! for the writer (docs/BENCHMARKS.md). The last shard is still awaited
//! before the manifest is written.

use std::{
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
};

use super::{
    output::{OutputDir, ShardStates},
    plan::{self, Layout},
    render::Rendered,
};
use crate::{
    error::{Error, Result},
    shard::{
        manifest::ManifestRow,
        writer::{ShardSummary, ShardWriter},
    },
};

/// A full shard on its way to the finishing thread: its index in the layout,
/// its writer and its rows.
type Full = (usize, ShardWriter, Vec<ManifestRow>);
/// What the finishing thread reports for each shard.
type Finished = Result<(usize, ShardSummary, Vec<ManifestRow>)>;

/// What the writer produced: every row in record-id order, and the shards.
pub(super) struct Written {
    pub rows: Vec<ManifestRow>,
    pub shards: Vec<ShardSummary>,
}

pub(super) struct ShardSink<'a> {
    out: &'a OutputDir,
    layout: &'a Layout,
    /// The shards this run writes (all of them, except on a worker).
    mine: Vec<bool>,
    current: Option<Full>,
    /// How many shards an earlier run had finished.
    pub resumed: usize,
    /// Rows of the complete shards, in no particular order.
    pub rows: Vec<ManifestRow>,
    /// Complete shards: kept from an earlier run, or finished by this one.
    shards: Vec<Option<ShardSummary>>,
    to_finish: Option<Sender<Full>>,
    finished: Receiver<Finished>,
    finisher: Option<JoinHandle<()>>,
}

impl<'a> ShardSink<'a> {
    /// Takes over the shards of `mine` an earlier run finished intact, and
    /// starts the finishing thread.
    pub fn new(out: &'a OutputDir, layout: &'a Layout, mine: Vec<bool>) -> Result<Self> {
        let (to_finish, queue) = mpsc::channel();
        let (report, finished) = mpsc::channel();
        let states = out.states();
        let finisher = std::thread::Builder::new()
            .name("shard-finisher".into())
            .spawn(move || finish_in_order(&queue, &report, &states))
            .map_err(|e| Error::Config(format!("cannot start the shard-finishing thread: {e}")))?;
        let mut sink = Self {
            out,
            layout,
            mine,
            current: None,
            resumed: 0,
            rows: Vec::new(),
            shards: vec![None; layout.shards.len()],
            to_finish: Some(to_finish),
            finished,
            finisher: Some(finisher),
        };
        for (k, spec) in layout.shards.iter().enumerate() {
            if !sink.mine[k] {
                continue;
            }
            if let Some((summary, rows)) = out.finished_shard(&spec.file, spec.records) {
                sink.resumed += 1;
                sink.rows.extend(rows);
                sink.shards[k] = Some(summary);
            }
        }
        Ok(sink)
    }

    pub fn push(&mut self, r: Rendered) -> Result<()> {
        let k = self.layout.shard_of(r.row.record_id);
        if self.current.as_ref().is_some_and(|(c, _, _)| *c != k) {
            self.close()?;
        }
        if self.current.is_none() {
            let spec = &self.layout.shards[k];
            let path = self.out.path.join(&spec.file);
            self.current = Some((
                k,
                ShardWriter::create(&path, plan::compression_of(&spec.file))?,
                Vec::new(),
            ));
        }
        let Some((_, writer, rows)) = self.current.as_mut() else {
            unreachable!("a shard writer was opened above")
        };
        let loc = writer.write(&r.example)?;
        let mut row = r.row;
        row.shard = self.layout.shards[k].file.clone();
        row.index_in_shard = loc.index;
        row.byte_offset = loc.offset;
        rows.push(row);
        if writer.records() == self.layout.shards[k].records {
            self.close()?;
        }
        Ok(())
    }

    /// Hands the current shard to the finishing thread, and takes in what it
    /// has finished so far (failing on its first error).
    fn close(&mut self) -> Result<()> {
        if let Some(full) = self.current.take() {
            let sent = self
                .to_finish
                .as_ref()
                .is_some_and(|tx| tx.send(full).is_ok());
            if !sent {
                // It only stops taking shards by panicking.
                self.join();
                return Err(Error::Config(
                    "the shard-finishing thread stopped unexpectedly".into(),
                ));
            }
        }
        while let Ok(result) = self.finished.try_recv() {
            self.take_in(result)?;
        }
        Ok(())
    }

    fn take_in(&mut self, result: Finished) -> Result<()> {
        let (k, summary, rows) = result?;
        self.rows.extend(rows);
        self.shards[k] = Some(summary);
        Ok(())
    }

    /// Stops taking shards and waits for the finishing thread to end.
    fn join(&mut self) {
        self.to_finish.take();
        if let Some(handle) = self.finisher.take() {
            let _ = handle.join();
        }
    }

    /// Which shards are left to write: this run's, less those complete.
    pub fn to_write(&self) -> Vec<bool> {
        self.shards
            .iter()
            .zip(&self.mine)
            .map(|(done, &mine)| mine && done.is_none())
            .collect()
    }

    /// Waits until every shard of this run is finished; their rows in
    /// record-id order, and the shards in plan order.
    pub fn finish(mut self) -> Result<Written> {
        self.close()?;
        self.join();
        while let Ok(result) = self.finished.try_recv() {
            self.take_in(result)?;
        }
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|r| r.record_id);
        let shards: Vec<ShardSummary> = self.shards.iter().flatten().cloned().collect();
        let (wanted_shards, wanted_rows) = self
            .layout
            .shards
            .iter()
            .zip(&self.mine)
            .filter(|(_, mine)| **mine)
            .fold((0, 0), |(n, r), (s, _)| (n + 1, r + s.records));
        if shards.len() != wanted_shards || rows.len() as u64 != wanted_rows {
            return Err(Error::output(
                &self.out.path,
                format!(
                    "internal error: wrote {} of {wanted_rows} records",
                    rows.len(),
                ),
            ));
        }
        Ok(Written { rows, shards })
    }
}

impl Drop for ShardSink<'_> {
    /// On an error, the shards already queued are dropped unfinished by the
    /// finishing thread (which removes their partial files) before `prepare`
    /// returns, so nothing half-written is left behind.
    fn drop(&mut self) {
        self.join();
    }
}

/// The finishing thread: finishes and records each shard in the order sent.
/// After the first failure it finishes nothing more; the shards it is sent
/// are dropped, which removes their partial files.
fn finish_in_order(queue: &Receiver<Full>, report: &Sender<Finished>, states: &ShardStates) {
    let mut finished = 0;
    let mut failed = false;
    for (k, writer, rows) in queue {
        if failed {
            continue;
        }
        let result = writer
            .finish()
            .and_then(|summary| states.record(&summary, &rows).map(|()| summary));
        match result {
            Ok(summary) => {
                finished += 1;
                crate::failpoint::reached("after-shard", finished);
                let _ = report.send(Ok((k, summary, rows)));
            }
            Err(e) => {
                failed = true;
                let _ = report.send(Err(e));
            }
        }
    }
}
