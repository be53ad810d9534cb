//! Training as the service runs it: a run (a spec, the demo, or a resume) in a job that waits for
//! the catalog on its own thread, the pause and computing flags the chat thread policy reads, and
//! the check of a run before it starts (a typed `TrainPlan`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CatalogWaiter, Emit, Event, ServiceError, TrainPlan};
use crate::engine::data::Catalog;
use crate::engine::jobs::{JobError, JobId, JobKind, Jobs};
use crate::engine::train::config::ModelConfig;
use crate::engine::train::demo;
use crate::engine::train::spec::RunSpec;
use crate::engine::train::trainer::{self, Control, Ending, TrainEvent};
use crate::engine::workspace::Workspace;

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainWhat {
    Spec(Box<RunSpec>),
    /// The bundled demo: a tiny model trained from scratch on the demo view.
    Demo,
    /// Continues a run from its last checkpoint.
    Resume(String),
}

/// The flags shared with a running training job.
#[derive(Clone, Default)]
pub(super) struct Training {
    pub(super) pause: Arc<AtomicBool>,
    /// Set while a run computes (by its job); cleared however the run ends.
    computing: Arc<AtomicBool>,
}

impl Training {
    /// A run is computing now (not paused): chat takes half its threads beside it, since
    /// llama.cpp's threads spin-wait for each other and lose to a busy core.
    pub(super) fn busy(&self) -> bool {
        self.computing.load(Ordering::Relaxed) && !self.pause.load(Ordering::Relaxed)
    }

    pub(super) fn set_paused(&self, paused: bool) {
        self.pause.store(paused, Ordering::Relaxed);
    }

    /// Starts a run in a job; its events and its end go to `emit`.
    pub(super) fn spawn(&self, jobs: &mut Jobs, ws: Workspace, catalog: CatalogWaiter, emit: Emit, what: TrainWhat) -> JobId {
        let pause = self.pause.clone();
        pause.store(false, Ordering::Relaxed);
        let title = match &what {
            TrainWhat::Spec(s) => s.view.clone(),
            TrainWhat::Demo => "demo".to_string(),
            TrainWhat::Resume(id) => format!("resume {id}"),
        };
        let computing = self.computing.clone();
        jobs.spawn(JobKind::Train, title, move |ctx| {
            /// Clears the flag however the run ends (a panic included).
            struct Computing(Arc<AtomicBool>);
            impl Drop for Computing {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Relaxed);
                }
            }
            // A run started as the workspace opens waits for the catalog here, not on the caller.
            let cat = match catalog(Duration::from_secs(60)) {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("The run cannot start: {e}.");
                    emit(Event::TrainDone(Err(msg.clone())));
                    return Err(JobError::Failed(msg));
                }
            };
            computing.store(true, Ordering::Relaxed);
            let _computing = Computing(computing);
            let control = Control { cancel: ctx.cancel_flag(), pause };
            let mut on = |ev: TrainEvent| {
                if let TrainEvent::Step(m) = &ev {
                    ctx.progress(Some(m.step as f32 / m.total.max(1) as f32), format!("step {}/{}", m.step, m.total));
                }
                emit(Event::Train(ev));
            };
            let result = match what {
                TrainWhat::Spec(spec) => trainer::start(&cat, &ws.runs_dir(), *spec, &control, &mut on),
                TrainWhat::Demo => demo::demo_spec(&cat, &ws.models_dir()).and_then(|spec| trainer::start(&cat, &ws.runs_dir(), spec, &control, &mut on)),
                TrainWhat::Resume(id) => trainer::resume(&cat, &ws.runs_dir(), &id, &control, &mut on),
            };
            // The job's own status (in lathe.jobs) says how the run went.
            let status = match &result {
                Ok(o) if o.ending == Ending::Cancelled => Err(JobError::Cancelled),
                Ok(_) => Ok(()),
                Err(msg) => Err(JobError::Failed(msg.clone())),
            };
            emit(Event::TrainDone(result));
            status
        })
    }
}

/// The check of a run before it starts: the memory estimate against what is free, the split,
/// token lengths and two examples. Reads the model's config and the view: call it off a UI thread.
pub fn plan(cat: &Catalog, spec: &RunSpec) -> Result<TrainPlan, ServiceError> {
    let mcfg = ModelConfig::load(&spec.model).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let p = crate::engine::train::prepare::preview(cat, spec, 2).map_err(ServiceError::Invalid)?;
    Ok(TrainPlan {
        memory_needed: crate::engine::train::memory::memory_estimate(&mcfg, &spec.config),
        memory_available: crate::engine::sysmon::available_memory(),
        memory_4bit: crate::engine::train::memory::with_4bit_base(&mcfg, &spec.config),
        train_examples: p.train_examples,
        eval_examples: p.eval_examples,
        max_len: spec.config.max_len,
        lengths: p.lengths,
        examples: p.examples,
    })
}
