//! Effects: where the workstation meets the service. The reducer's commands are carried out as
//! service calls, and the service's events come back as actions for the reducer. Only the
//! terminal's own effect (the clipboard, OSC 52) is done here.

use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedSender;

use super::action::{Action, Command};
use crate::engine::workspace::Workspace;
use crate::engine::export::gguf::Quant;
use crate::service::{Event, ModelSource, Service, Settings, TrainWhat};

/// Starts the service; its events arrive as actions on `tx`.
pub fn start_service(tx: UnboundedSender<Action>, ws: Option<&Workspace>, settings: Settings) -> Service {
    Service::start(ws, settings, move |ev| {
        if let Some(a) = action(ev) {
            let _ = tx.send(a);
        }
    })
}

pub fn execute(service: &mut Service, cmd: Command) {
    match cmd {
        Command::RunQuery { id, sql } => service.query(id, sql),
        Command::FetchPage { id, sql, offset } => service.page(id, sql, offset),
        Command::CancelQuery => service.cancel_query(),
        Command::RefreshDatasets => service.refresh_datasets(),
        Command::PreviewViews => service.preview_views(),
        Command::CompletePath(typed) => service.complete_path(typed),
        Command::ImportDataset { path, replace } => {
            service.import(path, None, replace);
        }
        Command::ExportResult { sql, path } => {
            service.export_data(crate::engine::data::ExportSource::Query(sql), path.into());
        }
        Command::StartStress { threads, seconds } => {
            service.stress(threads, seconds);
        }
        Command::CancelJob(id) => service.cancel_job(id),
        Command::CancelAllJobs => service.cancel_all_jobs(),
        Command::StartTraining(spec) => {
            service.train(TrainWhat::Spec(spec));
        }
        Command::StartDemo => {
            service.train(TrainWhat::Demo);
        }
        Command::ResumeRun(id) => {
            service.train(TrainWhat::Resume(id));
        }
        Command::PauseTraining(p) => service.pause_training(p),
        Command::CheckTraining(spec) => service.check_training(*spec),
        Command::RefreshRuns { request } => service.list_runs(request),
        Command::LoadRunMetrics { id, overlay } => service.run_metrics(id, overlay),
        Command::ListQuantEvals { request } => service.list_quant_evals(request),
        Command::RefreshModels { request } => service.list_models(request),
        Command::ExportRun { id, out } => {
            service.export(ModelSource::Run(id), PathBuf::from(out), Quant::F16, None);
        }
        Command::ExportModel { dir, out } => {
            service.export(ModelSource::Folder(PathBuf::from(dir)), PathBuf::from(out), Quant::F16, None);
        }
        Command::LoadChatModel { side, name } => service.load_model(side, name),
        Command::Generate { side, id, messages, sampling } => service.generate(side, id, messages, sampling),
        Command::StopGeneration => service.stop_generation(),
        Command::CloseCompare => service.close_compare(),
        Command::SaveChat(record) => service.save_chat(record),
        Command::ListChats { request } => service.list_chats(request),
        Command::LoadChat(id) => service.open_chat(id),
        Command::ExportChat { record, dir } => service.export_chat(record, PathBuf::from(dir)),
        Command::CopyToClipboard(text) => copy_to_clipboard(&text),
        Command::ListCollections { request } => service.list_collections(request),
        Command::SearchCollection { request, req } => service.search_collection(request, req),
        Command::Retrieve { id, collection, query } => service.retrieve(id, collection, query),
        Command::IngestCollection { name, paths } => service.ingest_collection(name, paths),
        Command::DropCollection { name, request } => service.drop_collection(name, request),
        Command::Reattach => service.reattach(),
        Command::StartServing => service.start_serving(),
        Command::StopServing => service.stop_serving(),
    }
}

/// A service event as the reducer's action.
pub fn action(ev: Event) -> Option<Action> {
    Some(match ev {
        Event::Data(e) => Action::Data(e),
        Event::Job(e) => Action::Job(e),
        Event::Sys(s) => Action::Sys(s),
        Event::Chat { side, event } => Action::Chat { side, event },
        Event::Train(e) => Action::Train(e),
        Event::TrainDone(r) => Action::TrainDone(r.map(|o| (o.run_id, o.ending.status()))),
        Event::TrainChecked(r) => Action::FormChecked(r.map(|p| crate::present::plan_lines(&p)).map_err(|e| e.to_string())),
        Event::Runs { request, result } => Action::Runs { request, result: result.map_err(|e| e.to_string()) },
        Event::RunMetrics { id, overlay, metrics } => Action::RunMetrics { id, overlay, metrics },
        Event::Models { request, result } => Action::Models { request, result: result.map_err(|e| e.to_string()) },
        Event::Exported(_) => Action::RefreshModels,
        Event::QuantReported(_) => Action::QuantReported,
        Event::QuantEvals { request, result } => Action::QuantEvals { request, result: result.map_err(|e| e.to_string()) },
        Event::Chats { request, result } => Action::ChatList { request, result: result.map_err(|e| e.to_string()) },
        Event::ChatOpened(r) => Action::ChatOpened(r.map_err(|e| e.to_string())),
        Event::PathCompletions { typed, list } => Action::PathCompletions { typed, list },
        Event::Info(m) => Action::Info(m),
        Event::Failure(m) => Action::Failure(m),
        Event::Collections { request, result } => Action::Collections { request, result: result.map_err(|e| e.to_string()) },
        Event::Searched { request, result } => Action::Searched { request, result: result.map_err(|e| e.to_string()) },
        Event::Retrieved { id, result } => Action::Retrieved { id, result: result.map_err(|e| e.to_string()) },
        Event::Ingest { job, progress } => Action::IngestProgress { job, progress },
        Event::Ingested { job, result } => Action::Ingested { job, result: result.map_err(|e| e.to_string()) },
        Event::Server(s) => Action::Server(s),
        Event::Detached(why) => Action::Detached(why),
        Event::Serving(r) => Action::Serving(r),
    })
}

/// OSC 52: the terminal (local, or at the far end of SSH) sets its clipboard.
fn copy_to_clipboard(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = write!(o, "\x1b]52;c;{}\x07", crate::units::base64(text.as_bytes()));
    let _ = o.flush();
}
