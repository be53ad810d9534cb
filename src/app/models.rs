//! The Models pane: the model library as the service last listed it, the selection, and what
//! Enter (chat with the selected model) and e (export a Hugging Face folder as GGUF) do with it.

use super::action::{Action, Command, PaneId};
use super::keymap::Mode;
use super::shell::{Ctx, Level};
use crate::engine::export::gguf::Quant;
use crate::engine::infer::library::ModelEntry;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelsPane {
    /// The library once listed; Err says why it could not be.
    pub list: Option<Result<Vec<ModelEntry>, String>>,
    pub selected: usize,
    /// The newest listing asked for: an older answer (listings run on threads of their own) is
    /// dropped.
    pub request: u64,
}

/// What the pane asks of the app beyond commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    Nothing,
    /// Chat with this model (its path or server spec): the Chat pane loads it.
    Chat(String),
}

impl ModelsPane {
    pub fn rows(&self) -> &[ModelEntry] {
        match &self.list {
            Some(Ok(l)) => l,
            _ => &[],
        }
    }

    /// Asks the service for the library again.
    pub fn refresh(&mut self) -> Command {
        self.request += 1;
        Command::RefreshModels { request: self.request }
    }

    /// The pane's own actions. Enter on a GGUF model (or a server's) returns `Picked::Chat`.
    pub fn update(&mut self, action: Action, cx: &mut Ctx, out: &mut Vec<Command>) -> Picked {
        match action {
            Action::RefreshModels => out.push(self.refresh()),
            Action::Models { request, .. } if request != self.request => {}
            Action::Models { result, .. } => {
                let n = result.as_ref().map(|l| l.len()).unwrap_or(0);
                self.selected = self.selected.min(n.saturating_sub(1));
                self.list = Some(result);
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom => {
                let n = self.rows().len() as i64;
                let cur = self.selected as i64;
                let next = match action {
                    Action::ScrollUp => cur - 1,
                    Action::ScrollDown => cur + 1,
                    Action::PageUp => cur - 10,
                    Action::PageDown => cur + 10,
                    Action::Top => 0,
                    _ => n - 1,
                };
                self.selected = next.clamp(0, (n - 1).max(0)) as usize;
            }
            Action::ChatWithModel | Action::ExportModel => return self.pick(action == Action::ChatWithModel, cx, out),
            other => debug_assert!(false, "the Models pane got {other:?}"),
        }
        Picked::Nothing
    }

    fn pick(&self, chat: bool, cx: &mut Ctx, out: &mut Vec<Command>) -> Picked {
        let key = |a: Action| cx.keymap.hint(Mode::Models, &a);
        match self.rows().get(self.selected).cloned() {
            None => cx.notify(Level::Info, "No model selected."),
            Some(e) if e.problem.is_some() => cx.notify(Level::Error, e.problem.clone().unwrap_or_default()),
            Some(e) if chat && (e.format == "gguf" || e.format == "remote") => {
                *cx.focus = PaneId::Chat;
                let name = e.path.display().to_string();
                out.push(Command::LoadChatModel { side: 0, name: name.clone() });
                return Picked::Chat(name);
            }
            Some(e) if e.format == "embedding" => {
                let msg = format!("{} is a sentence-embedding model: it embeds text (lathe embed --model {}); it does not chat or export.", e.name, e.path.display());
                cx.notify(Level::Info, msg);
            }
            Some(e) if chat => {
                let msg = format!("{} is a Hugging Face folder: press {} to export it as GGUF, then chat with the export.", e.name, key(Action::ExportModel));
                cx.notify(Level::Info, msg);
            }
            Some(e) if e.format == "hf" => {
                let out_path = crate::service::export_path(&cx.ws(), &e.name, Quant::F16);
                cx.notify(Level::Info, format!("Exporting {} to {} (a job; the list refreshes when it is done).", e.name, out_path.display()));
                out.push(Command::ExportModel { dir: e.path.display().to_string(), out: out_path.display().to_string() });
            }
            Some(e) => cx.notify(Level::Info, format!("{} is already GGUF: {} chats with it.", e.name, key(Action::ChatWithModel))),
        }
        Picked::Nothing
    }
}
