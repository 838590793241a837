//! How the stages of a run are wired: the worker pool prepares units in parallel and sends them
//! through a bounded channel to the calling thread, which encodes and commits them in batches.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::commit::known_hashes;
use super::plan::Plan;
use super::prepare::{Clocks, Ctx, Prepared};
use super::{IndexEvent, IndexOptions, IndexSummary, StageTimes, Work};
use crate::chunk::Chunker;
use crate::enc::preprocess::DecodeOptions;
use crate::enc::ClipModel;
use crate::error::{Error, Result};
use crate::idx::Store;

/// The calling thread's side of a run: encodes and commits what the workers prepared.
pub(super) struct Consumer<'a> {
    pub(super) store: &'a mut Store,
    pub(super) model: &'a ClipModel,
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) opts: &'a IndexOptions,
    /// Units still to come per file.
    pub(super) remaining: HashMap<usize, usize>,
    /// Vectors each unfinished file produced so far.
    pub(super) produced: HashMap<usize, HashSet<u64>>,
    /// Files that failed (their records are not written).
    pub(super) failed: HashSet<usize>,
    pub(super) summary: IndexSummary,
    pub(super) done_units: usize,
    total_units: usize,
    pub(super) encode_time: Duration,
    pub(super) store_time: Duration,
}

impl Consumer<'_> {
    /// Encodes and commits one batch of prepared units, then reports progress.
    fn flush(
        &mut self,
        mut pending: Vec<Prepared>,
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let vectors = self.resolve_vectors(&mut pending, on_event)?;
        self.commit_batch(&pending, vectors, on_event)?;
        on_event(IndexEvent::Progress {
            done: self.done_units,
            total: self.total_units,
            encoded: self.summary.encoded,
            reused: self.summary.reused,
        });
        if let Some(d) = self.opts.batch_pause {
            std::thread::sleep(d);
        }
        Ok(())
    }
}

/// The decode options of a run.
pub(super) fn decode_options(model: &ClipModel, opts: &IndexOptions) -> DecodeOptions {
    let d = DecodeOptions {
        apply_exif_orientation: true,
        max_megapixels: opts.max_megapixels,
        ..Default::default()
    };
    if opts.fast_jpeg.unwrap_or(!model.device().is_cpu()) {
        d.with_fast_jpeg(model.image_size())
    } else {
        d
    }
}

/// Runs a plan: prepares, encodes and commits every unit, then removes the files that are gone.
pub(super) fn run(
    store: &mut Store,
    model: &ClipModel,
    model_dir: &Path,
    plan: Plan,
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    let started = Instant::now();
    let Plan {
        files,
        units,
        remove,
        skipped,
        failed,
        problems,
    } = plan;
    on_event(IndexEvent::Planned {
        files: files.len(),
        units: units.len(),
        unchanged: skipped,
        to_remove: remove.len(),
    });
    let needs_text = units
        .iter()
        .any(|u| matches!(u.work, Work::Text | Work::TextPart { .. }));
    let chunker = if needs_text {
        Some(Chunker::load(model_dir, opts.max_tokens)?)
    } else {
        None
    };
    let needs_images = units.iter().any(|u| {
        matches!(&u.work, Work::Image) || matches!(&u.work, Work::Record(r) if r.image.is_some())
    });
    let mut known = if needs_images {
        known_hashes(store)?
    } else {
        HashSet::new()
    };
    // Images whose vectors came with the run are read and hashed, never decoded.
    if let (true, Some(p)) = (needs_images, &opts.precomputed) {
        known.extend(p.hashes().copied());
    }
    let clocks = Clocks::default();
    let cancel = AtomicBool::new(false);
    let ctx = Ctx {
        files: &files,
        pre: model.preprocessor(),
        chunker: chunker.as_ref(),
        known: &known,
        decode: decode_options(model, opts),
        clocks: &clocks,
        cancel: &cancel,
        image_limit: opts.image_limit(),
        text_limit: opts.text_limit(),
    };
    let mut remaining = HashMap::new();
    for u in &units {
        *remaining.entry(u.file).or_insert(0usize) += 1;
    }
    let empty_files: Vec<usize> = (0..files.len())
        .filter(|f| !remaining.contains_key(f))
        .collect();
    let batch_size = match opts.batch_size {
        0 if model.device().is_cpu() => 32,
        0 => 64,
        n => n,
    };
    let mut consumer = Consumer {
        store,
        model,
        ctx: &ctx,
        opts,
        remaining,
        produced: HashMap::new(),
        failed: HashSet::new(),
        summary: IndexSummary {
            skipped,
            failed,
            problems,
            ..Default::default()
        },
        done_units: 0,
        total_units: units.len(),
        encode_time: Duration::ZERO,
        store_time: Duration::ZERO,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("jsearch-prep-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start worker threads: {e}")))?;
    let mut wait = Duration::ZERO;
    let (tx, rx) = sync_channel::<Prepared>(batch_size * 2);
    let result: Result<()> = std::thread::scope(|s| {
        let ctx_ref = &ctx;
        let producer = s.spawn(move || {
            pool.install(|| {
                units.into_par_iter().for_each_with(tx, |tx, unit| {
                    if ctx_ref.cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let p = ctx_ref.prepare(unit);
                    if tx.send(p).is_err() {
                        ctx_ref.cancel.store(true, Ordering::Relaxed);
                    }
                });
            });
        });
        let mut pending = Vec::new();
        let mut nvec = 0usize;
        let res = loop {
            let t = Instant::now();
            let msg = rx.recv();
            wait += t.elapsed();
            match msg {
                Ok(p) => {
                    nvec += p.items.iter().map(|i| i.vecs.len()).sum::<usize>().max(1);
                    pending.push(p);
                    if nvec >= batch_size {
                        nvec = 0;
                        if let Err(e) = consumer.flush(std::mem::take(&mut pending), on_event) {
                            break Err(e);
                        }
                    }
                }
                Err(_) => break consumer.flush(std::mem::take(&mut pending), on_event),
            }
        };
        if res.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(rx);
        if producer.join().is_err() {
            return Err(Error::Internal("a preprocessing thread panicked".into()));
        }
        res
    });
    result?;

    let removed = consumer.finish_run(&empty_files, &remove)?;
    let mut summary = consumer.summary;
    summary.removed = removed;
    summary.elapsed = started.elapsed().as_secs_f64();
    summary.times = StageTimes {
        read: clocks.read.secs(),
        decode: clocks.decode.secs(),
        preprocess: clocks.preprocess.secs(),
        encode: consumer.encode_time.as_secs_f64(),
        store: consumer.store_time.as_secs_f64(),
        wait: wait.as_secs_f64(),
    };
    Ok(summary)
}
