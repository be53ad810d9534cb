//! The Training, Loss and Runs panes: the run this session trains, the new-run form, the loss
//! chart's view and the recorded runs, and the pure update of each (no clock, no I/O: commands
//! go out, events come back as actions).

use super::action::{Action, Command, PaneId};
use super::keymap::Mode;
use super::shell::{Ctx, Level, Overlay};
use super::train::{ChartView, LiveRun, RunsState, TrainForm};
use crate::engine::data::runs::split_metrics;
use crate::engine::types::RunStatus;
use crate::present::{compare_lines, detail_lines};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingPanes {
    /// The run this session trains or trained last.
    pub live: Option<LiveRun>,
    pub form: Option<TrainForm>,
    pub chart: ChartView,
    pub runs: RunsState,
}

impl TrainingPanes {
    fn busy(&self, cx: &mut Ctx) -> bool {
        if self.live.as_ref().is_some_and(|r| r.is_active()) {
            let (pause, cancel) = (cx.keymap.hint(Mode::Training, &Action::PauseRun), cx.keymap.hint(Mode::Training, &Action::CancelRun));
            cx.notify(Level::Info, format!("A run is training; pause ({pause}) or cancel ({cancel}) it first."));
            return true;
        }
        false
    }

    /// A training job started: the live run's (the one this session asked for), or a run this
    /// session did not ask for (the server's), which takes the Training pane too.
    pub fn job_started(&mut self, job: u64) {
        if self.live.as_ref().is_none_or(|r| !r.is_active()) {
            self.live = Some(LiveRun { status: RunStatus::Starting, ..Default::default() });
        }
        if let Some(r) = self.live.as_mut() {
            r.job = Some(job);
        }
    }

    /// Starts the run the form describes (Enter in the form), unless one is training.
    pub fn submit_form(&mut self, cx: &mut Ctx) -> Vec<Command> {
        let busy = self.live.as_ref().is_some_and(|r| r.is_active());
        let Some(form) = &mut self.form else { return Vec::new() };
        match form.spec() {
            Ok(_) if busy => {
                form.check = Some(Err("A run is training; pause or cancel it before starting another.".into()));
                Vec::new()
            }
            Ok((model, view, config)) => {
                let spec = crate::engine::train::spec::RunSpec { model: model.clone().into(), view: view.clone(), config };
                self.live = Some(LiveRun { status: RunStatus::Starting, model, view, ..Default::default() });
                self.chart.overlay = None;
                self.form = None;
                *cx.overlay = None;
                *cx.focus = PaneId::Training;
                vec![Command::StartTraining(Box::new(spec))]
            }
            Err(e) => {
                form.check = Some(Err(e));
                Vec::new()
            }
        }
    }

    /// The Training, Loss and Runs panes' actions.
    pub fn update(&mut self, action: Action, cx: &mut Ctx) -> Vec<Command> {
        let mut out = Vec::new();
        match action {
            Action::StartDemo => {
                if self.busy(cx) {
                    return out;
                }
                self.live = Some(LiveRun {
                    status: RunStatus::Starting,
                    model: "demo (built from scratch)".into(),
                    view: crate::engine::train::demo::DEMO_VIEW.into(),
                    ..Default::default()
                });
                self.chart.overlay = None;
                out.push(Command::StartDemo);
            }
            Action::NewRun => {
                // The last model used (this form's, else the newest run's); no file system look-up
                // on the UI thread.
                let model = match &self.form {
                    Some(f) => f.fields[super::train::F_MODEL].value.clone(),
                    None => self.runs.rows().first().map(|r| r.model.clone()).unwrap_or_default(),
                };
                self.form = Some(TrainForm::new(&model, crate::engine::train::demo::DEMO_VIEW));
                *cx.overlay = Some(Overlay::TrainForm);
                // With a model already filled in, the estimate and preview come without asking.
                if !model.is_empty() {
                    out.extend(self.update(Action::CheckForm, cx));
                }
            }
            Action::CheckForm => {
                if let Some(f) = &mut self.form {
                    match f.spec() {
                        Ok((model, view, config)) => {
                            f.check = Some(Ok(vec!["Checking…".into()]));
                            let spec = crate::engine::train::spec::RunSpec { model: model.into(), view, config };
                            out.push(Command::CheckTraining(Box::new(spec)));
                        }
                        Err(e) => f.check = Some(Err(e)),
                    }
                }
            }
            Action::FormChecked(r) => {
                if let Some(f) = &mut self.form {
                    f.check = Some(r);
                }
            }
            Action::PauseRun => match &self.live {
                Some(r) if r.is_active() => out.push(Command::PauseTraining(r.status != RunStatus::Paused)),
                _ => cx.notify(Level::Info, "No run is training."),
            },
            Action::CancelRun => match self.live.as_ref().filter(|r| r.is_active()).and_then(|r| r.job) {
                Some(job) => out.push(Command::CancelJob(job)),
                None => cx.notify(Level::Info, "No run is training."),
            },
            Action::ResumeRun => {
                let target = if *cx.focus == PaneId::Runs {
                    self.runs.selected_row().filter(|r| r.status.is_resumable()).map(|r| r.id.clone())
                } else {
                    self.live
                        .as_ref()
                        .filter(|r| r.status.is_resumable())
                        .map(|r| r.id.clone())
                        .or_else(|| self.runs.rows().iter().find(|r| r.status == RunStatus::Interrupted).map(|r| r.id.clone()))
                };
                match target {
                    Some(id) if !self.busy(cx) => {
                        self.live = Some(LiveRun { id: id.clone(), status: RunStatus::Starting, ..Default::default() });
                        out.push(Command::ResumeRun(id));
                    }
                    Some(_) => {}
                    None => cx.notify(Level::Info, "No interrupted or cancelled run to resume (the Runs pane lists them)."),
                }
            }
            Action::Train(ev) => {
                // A new run belongs in the Runs list as soon as it exists.
                if matches!(ev, crate::engine::train::trainer::TrainEvent::Started { .. }) {
                    out.push(self.runs.refresh());
                }
                // A run this session did not start (the server's, seen on attaching or started by
                // another client) becomes the live one when it starts.
                if let crate::engine::train::trainer::TrainEvent::Started { run_id, .. } = &ev {
                    if self.live.as_ref().is_none_or(|r| !r.id.is_empty() && r.id != *run_id) {
                        let job = self.live.as_ref().and_then(|r| r.job);
                        self.live = Some(LiveRun { job, ..Default::default() });
                    }
                }
                if let Some(r) = &mut self.live {
                    r.apply(&ev);
                    self.runs.follow(r);
                }
            }
            Action::TrainDone(res) => {
                match res {
                    Ok((id, status)) => {
                        let text = match self.live.as_mut() {
                            Some(r) => {
                                r.status = status;
                                let acc = r.accuracy.map(|(c, t)| format!(", exact match {c}/{t}")).unwrap_or_default();
                                format!("Run {id} {}{acc}.", status.words())
                            }
                            None => format!("Run {id} {status}."),
                        };
                        cx.notify(Level::Info, text);
                    }
                    Err(msg) => {
                        if let Some(r) = self.live.as_mut() {
                            r.status = RunStatus::Failed;
                            r.message = Some(msg.clone());
                        }
                        cx.notify(Level::Error, msg);
                    }
                }
                out.push(self.runs.refresh());
            }
            Action::ToggleSmooth => self.chart.smooth = !self.chart.smooth,
            Action::ToggleLogScale => self.chart.log = !self.chart.log,
            Action::ZoomIn => self.chart.zoom_in(),
            Action::ZoomOut => self.chart.zoom_out(),
            Action::OverlayRun => {
                let live = self.live.as_ref().map(|r| r.id.clone()).unwrap_or_default();
                let ids: Vec<String> = self.runs.rows().iter().map(|r| r.id.clone()).filter(|id| *id != live).collect();
                let next = match &self.chart.overlay {
                    Some((cur, _, _)) => ids.iter().position(|i| i == cur).and_then(|p| ids.get(p + 1)).cloned(),
                    None => ids.first().cloned(),
                };
                match next {
                    Some(id) => out.push(Command::LoadRunMetrics { id, overlay: true }),
                    None => {
                        self.chart.overlay = None;
                        if ids.is_empty() {
                            cx.notify(Level::Info, "No other run to overlay yet.");
                            out.push(self.runs.refresh());
                        }
                    }
                }
            }
            Action::RunMetrics { id, overlay, metrics } => {
                if overlay {
                    let (t, e) = split_metrics(&metrics);
                    self.chart.overlay = Some((id, t, e));
                } else if let Some(row) = self.runs.rows().iter().find(|r| r.id == id).cloned() {
                    self.runs.detail = Some((format!("Run {id}"), detail_lines(&row, &metrics)));
                    self.runs.detail_scroll = 0;
                    *cx.overlay = Some(Overlay::RunDetail);
                }
            }
            Action::OpenRun => {
                if let Some(r) = self.runs.selected_row() {
                    out.push(Command::LoadRunMetrics { id: r.id.clone(), overlay: false });
                }
            }
            Action::MarkRun => {
                if let Some(r) = self.runs.selected_row() {
                    let id = r.id.clone();
                    self.runs.marked = if self.runs.marked.as_deref() == Some(id.as_str()) { None } else { Some(id) };
                }
            }
            Action::CompareRuns => {
                let a = self.runs.marked.as_ref().and_then(|m| self.runs.rows().iter().find(|r| &r.id == m)).cloned();
                match (a, self.runs.selected_row().cloned()) {
                    (Some(a), Some(b)) if a.id != b.id => {
                        self.runs.detail = Some((format!("{} vs {}", a.id, b.id), compare_lines(&a, &b)));
                        self.runs.detail_scroll = 0;
                        *cx.overlay = Some(Overlay::RunDetail);
                    }
                    _ => cx.notify(
                        Level::Info,
                        format!(
                            "Mark a run with {}, select another, then press {} to compare.",
                            cx.keymap.hint(Mode::Runs, &Action::MarkRun),
                            cx.keymap.hint(Mode::Runs, &Action::CompareRuns)
                        ),
                    ),
                }
            }
            Action::RefreshRuns => out.push(self.runs.refresh()),
            Action::QuantReports => {
                self.runs.quant_request += 1;
                self.runs.quant = None;
                self.runs.quant_shown = 0;
                self.runs.quant_for = self.runs.selected_row().map(|r| r.id.clone());
                *cx.overlay = Some(Overlay::QuantReport);
                out.push(Command::ListQuantEvals { request: self.runs.quant_request });
            }
            Action::QuantEvals { request, .. } if request != self.runs.quant_request => {}
            Action::QuantEvals { result, .. } => {
                self.runs.quant = Some(result);
                // The overlay opens on the selected run's newest report, where it has one.
                if let (Some(run), Some(Ok(rows))) = (self.runs.quant_for.take(), &self.runs.quant) {
                    let report = rows.iter().find(|r| r.source == run).map(|r| r.report.clone());
                    if let Some(i) = report.and_then(|id| self.runs.quant_ids().iter().position(|r| *r == id)) {
                        self.runs.quant_shown = i;
                    }
                }
                self.runs.quant_shown = self.runs.quant_shown.min(self.runs.quant_ids().len().saturating_sub(1));
            }
            Action::QuantReported => {
                if *cx.overlay == Some(Overlay::QuantReport) {
                    self.runs.quant_request += 1;
                    out.push(Command::ListQuantEvals { request: self.runs.quant_request });
                }
            }
            Action::PrevReport | Action::NextReport | Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown
                if *cx.overlay == Some(Overlay::QuantReport) =>
            {
                let n = self.runs.quant_ids().len();
                let s = &mut self.runs.quant_shown;
                *s = match action {
                    Action::PrevReport => s.saturating_sub(1),
                    Action::NextReport => (*s + 1).min(n.saturating_sub(1)),
                    _ => *s,
                };
            }
            Action::Runs { request, .. } if request != self.runs.request => {}
            Action::Runs { result: list, .. } => {
                if let Err(e) = &list {
                    cx.notify(Level::Error, e.clone());
                }
                self.runs.list = Some(list);
                let n = self.runs.rows().len();
                self.runs.selected = self.runs.selected.min(n.saturating_sub(1));
            }
            Action::ExportRun => match self.runs.rows().get(self.runs.selected).cloned() {
                Some(r) if r.artifacts.is_some() && r.status != RunStatus::Running => {
                    let out_path = crate::service::export_path(&cx.ws(), &crate::service::run_export_name(&r.id), crate::engine::export::gguf::Quant::F16);
                    cx.notify(Level::Info, format!("Exporting run {} to {} (a job; it joins the Models pane when done).", r.id, out_path.display()));
                    out.push(Command::ExportRun { id: r.id.clone(), out: out_path.display().to_string() });
                }
                Some(r) => cx.notify(Level::Info, format!("Run {} has nothing to export yet: finish or resume it first.", r.id)),
                None => cx.notify(Level::Info, "No run selected."),
            },
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown
                if *cx.overlay == Some(Overlay::RunDetail) =>
            {
                let s = &mut self.runs.detail_scroll;
                *s = match action {
                    Action::ScrollUp => s.saturating_sub(1),
                    Action::PageUp => s.saturating_sub(10),
                    Action::PageDown => s.saturating_add(10),
                    _ => s.saturating_add(1),
                };
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom =>
            {
                match action {
                    Action::ScrollUp => self.runs.move_by(-1),
                    Action::ScrollDown => self.runs.move_by(1),
                    Action::PageUp => self.runs.move_by(-10),
                    Action::PageDown => self.runs.move_by(10),
                    Action::Top => self.runs.move_by(-(1 << 30)),
                    _ => self.runs.move_by(1 << 30),
                }
            }
            other => debug_assert!(false, "the Training panes got {other:?}"),
        }
        out
    }
}
