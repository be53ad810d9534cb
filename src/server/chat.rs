//! OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`, answered by the library's
//! GGUF models through the slot engine (`engine::infer::slots`), or passed through to the
//! library's Ollama server (`ollama:NAME`) or an OpenAI-compatible server the user added
//! (`SERVER/MODEL`), chat only: streamed over server-sent
//! events or whole; `max_tokens` or `max_completion_tokens`, `temperature`, `top_p`, `seed`,
//! `stop` (a string or a list), the frequency and presence penalties, and `response_format`
//! `json_object` or `json_schema`, constrained by the grammar llama.cpp's own converter makes, so
//! the answer parses. A request when every slot is busy and the queue is full gets 503 with
//! `Retry-After`; a client that leaves stops its answer at the next token. Unset sampling fields
//! take the Chat pane's defaults (as llama-server takes its own), not OpenAI's temperature 1.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{blocking, json_response, model_error, read_json, whole, ApiError, AppState};
use crate::engine::infer::slots::{self, Event, GenError, Prompt};
use crate::engine::types::{Message, Sampling, Stats, StopReason};

/// Which of the two routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// A request, checked.
#[derive(Debug)]
struct Ask {
    model: String,
    prompt: Prompt,
    sampling: Sampling,
    grammar: Option<String>,
    stream: bool,
    include_usage: bool,
}

/// Stop strings per request.
const MAX_STOPS: usize = 16;

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

fn number(body: &Value, key: &'static str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
            _ => Err(bad("invalid_value", format!("{key} must be a number from {lo} to {hi}."))),
        },
    }
}

/// A message's text: a string, or a list of text parts (joined); other parts are refused.
fn content(v: &Value, at: usize) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(
                            "invalid_content",
                            format!("messages[{at}] has a {} part; lathe's models read text parts only.", kind.unwrap_or("untyped")),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(bad("invalid_content", format!("messages[{at}].content must be a string or a list of text parts."))),
    }
}

fn messages(body: &Value) -> Result<Vec<Message>, ApiError> {
    let list = body["messages"].as_array().ok_or_else(|| bad("invalid_messages", "messages is required: a list of {\"role\", \"content\"}."))?;
    if list.is_empty() {
        return Err(bad("invalid_messages", "messages is empty; send at least one message."));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m["role"].as_str() {
                Some("developer") | Some("system") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                Some(other) => return Err(bad("invalid_role", format!("messages[{i}] has role {other:?}; lathe takes system, developer, user and assistant (no tools yet)."))),
                None => return Err(bad("invalid_role", format!("messages[{i}] has no role."))),
            };
            Ok(Message { role: role.into(), content: content(&m["content"], i)? })
        })
        .collect()
}

fn prompt_text(body: &Value) -> Result<String, ApiError> {
    match &body["prompt"] {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => Ok(items[0].as_str().unwrap_or_default().to_string()),
        Value::Array(items) if items.iter().all(Value::is_string) => Err(bad("invalid_prompt", "prompt holds several texts; send one prompt per request.")),
        Value::Null => Err(bad("invalid_prompt", "prompt is required: the text to continue.")),
        _ => Err(bad("invalid_prompt", "prompt must be a string; token ids are not taken.")),
    }
}

fn stops(body: &Value) -> Result<Vec<String>, ApiError> {
    let list = match &body["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
        _ => return Err(bad("invalid_stop", "stop must be a string or a list of strings.")),
    };
    if list.len() > MAX_STOPS {
        return Err(bad("invalid_stop", format!("stop has {} strings; send at most {MAX_STOPS}.", list.len())));
    }
    Ok(list)
}

/// The grammar a `response_format` asks for (none for text).
fn grammar(body: &Value) -> Result<Option<String>, ApiError> {
    let format = &body["response_format"];
    let schema = match format["type"].as_str() {
        _ if format.is_null() => return Ok(None),
        Some("text") => return Ok(None),
        Some("json_object") => json!({"type": "object"}),
        Some("json_schema") => match &format["json_schema"]["schema"] {
            s @ Value::Object(_) => s.clone(),
            _ => return Err(bad("invalid_response_format", "response_format.json_schema.schema is required: a JSON Schema object.")),
        },
        _ => return Err(bad("invalid_response_format", "response_format.type must be text, json_object or json_schema.")),
    };
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(Some)
        .map_err(|e| bad("invalid_schema", format!("llama.cpp cannot turn this JSON Schema into a grammar ({e}); simplify it.")))
}

/// OpenAI's `logit_bias`: token ids (as the object's keys) to biases from -100 to 100, at most
/// `MAX_BIASES` of them. Whether each id is the model's is checked once the model is known.
fn logit_bias(body: &Value) -> Result<Vec<(i32, f32)>, ApiError> {
    let map = match body.get("logit_bias") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("invalid_logit_bias", "logit_bias must be an object mapping token ids to biases from -100 to 100.")),
    };
    if map.len() > MAX_BIASES {
        return Err(bad("invalid_logit_bias", format!("logit_bias has {} tokens; give at most {MAX_BIASES}.", map.len())));
    }
    map.iter()
        .map(|(k, v)| {
            let digits = (1..=9).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_digit());
            let token = k.parse::<i32>().ok().filter(|_| digits).ok_or_else(|| bad("invalid_logit_bias", format!("logit_bias key {k:?} is not a token id (a whole number, as a string).")))?;
            let bias = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| bad("invalid_logit_bias", format!("logit_bias for token {k} must be a number from -100 to 100.")))?;
            Ok((token, bias as f32))
        })
        .collect()
}

/// The most tokens one request may bias, as OpenAI allows.
const MAX_BIASES: usize = 300;

fn parse(body: &Value, kind: Kind) -> Result<Ask, ApiError> {
    let model = body["model"].as_str().ok_or_else(|| bad("invalid_model", "model is required: a model's name (GET /v1/models lists them)."))?.to_string();
    let prompt = match kind {
        Kind::Chat => Prompt::Chat(messages(body)?),
        Kind::Completion => Prompt::Text(prompt_text(body)?),
    };
    if body.get("n").is_some_and(|n| !n.is_null() && whole(n) != Some(1)) {
        return Err(bad("invalid_n", "n must be 1: lathe gives one answer per request."));
    }
    if body["logprobs"].as_bool() == Some(true) || body["logprobs"].is_number() {
        return Err(bad("unsupported_parameter", "logprobs are not given by lathe yet; leave logprobs out."));
    }
    if body["tools"].as_array().is_some_and(|t| !t.is_empty()) {
        return Err(bad("unsupported_parameter", "tools are not supported by lathe yet; leave tools out."));
    }
    let max = |key: &'static str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => whole(v).filter(|&n| n > 0).map(|n| Some(n as usize)).ok_or_else(|| bad("invalid_value", format!("{key} must be a whole number of at least 1."))),
    };
    let max_tokens = max("max_completion_tokens")?.or(max("max_tokens")?).unwrap_or(usize::MAX);
    let defaults = Sampling::default();
    let sampling = Sampling {
        temperature: number(body, "temperature", 0.0, 2.0)?.unwrap_or(defaults.temperature),
        top_p: number(body, "top_p", 0.0, 1.0)?.unwrap_or(defaults.top_p),
        frequency_penalty: number(body, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        presence_penalty: number(body, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        // Repetition is OpenAI's penalties' business here.
        repeat_penalty: 1.0,
        // llama.cpp's "pick a seed at random".
        seed: match body.get("seed") {
            None | Some(Value::Null) => u32::MAX,
            Some(v) => whole(v).ok_or_else(|| bad("invalid_value", "seed must be a whole number."))? as u32,
        },
        max_tokens,
        stop: stops(body)?,
        logit_bias: logit_bias(body)?,
        ..defaults
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| bad("invalid_value", "stream must be true or false."))?,
    };
    let include_usage = stream && body["stream_options"]["include_usage"].as_bool() == Some(true);
    Ok(Ask { model, prompt, sampling, grammar: grammar(body)?, stream, include_usage })
}

fn gen_error(e: GenError) -> ApiError {
    let message = e.to_string();
    let (status, kind, code) = match e {
        GenError::PromptTooLong { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", "context_length_exceeded"),
        GenError::Template(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", "template_error"),
        GenError::Grammar => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_schema"),
        GenError::UnknownToken { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_logit_bias"),
        GenError::Load(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "model_unavailable"),
        GenError::Decode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_failed"),
        GenError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "server_stopping"),
    };
    ApiError { status, kind, code, message }
}

/// 503 when every slot is busy and the queue is full; the client may retry after a second.
fn queue_full(waiting: usize) -> Response {
    let mut r = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: "queue_full",
        message: format!("Every slot is answering and {waiting} requests wait; try again in a moment."),
    }
    .into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut().insert("x-should-retry", HeaderValue::from_static("true"));
    r
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfTurn | StopReason::StopString | StopReason::Cancelled => "stop",
    }
}

fn usage(stats: &Stats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.reused_tokens},
    })
}

/// What every response and chunk of one answer repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Head {
    fn new(model: String, kind: Kind) -> Head {
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Head { id: format!("{prefix}-{created:x}{:05x}{n:x}", std::process::id() & 0xfffff), created, model, kind }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn whole(&self, text: String, stats: &Stats) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": finish_reason(stats.stop)}),
            Kind::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(stats.stop)}),
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "system_fingerprint": null, "choices": [choice], "usage": usage(stats)})
    }

    /// A streamed chunk: `piece` of text (with the role, first), or the end (`finish`).
    fn chunk(&self, piece: Option<&str>, first: bool, finish: Option<StopReason>, with_usage: bool) -> String {
        let reason = finish.map(finish_reason);
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match (piece, first) {
                    (Some(t), true) => json!({"role": "assistant", "content": t}),
                    (Some(t), false) => json!({"content": t}),
                    (None, _) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => json!({"index": 0, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": reason}),
        };
        let mut v = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "system_fingerprint": null, "choices": [choice]});
        if with_usage {
            v["usage"] = Value::Null;
        }
        v.to_string()
    }

    /// The last chunk of a stream that asked for usage: no choices, the usage.
    fn usage_chunk(&self, stats: &Stats) -> String {
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "system_fingerprint": null, "choices": [], "usage": usage(stats)}).to_string()
    }
}

pub(super) async fn chat_completions(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    answer(state, req, Kind::Chat).await
}

pub(super) async fn completions(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    answer(state, req, Kind::Completion).await
}

async fn answer(state: AppState, req: Request, kind: Kind) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let ask = parse(&body, kind)?;
    let name = ask.model.clone();
    let model = blocking(&state, move |s| s.chat_model(&name).map_err(model_error)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    match model {
        crate::engine::types::ModelRef::File(path) => {
            let request = slots::Request { model: path, prompt: ask.prompt, sampling: ask.sampling, grammar: ask.grammar, events: tx };
            if state.slots.submit(request).is_err() {
                return Ok(queue_full(state.slots.figures.waiting.load(Ordering::Relaxed)));
            }
        }
        crate::engine::types::ModelRef::Server(remote) => pass_through(remote, ask.prompt, ask.sampling, ask.grammar.is_some(), tx)?,
    }
    // Whether it runs is known before any byte of the answer is sent, so errors keep their status.
    match rx.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(gen_error(e)),
        _ => return Err(gen_error(GenError::Decode("the engine ended the request without a word".into()))),
    }
    let head = Head::new(ask.model, kind);
    if ask.stream {
        return Ok(stream(rx, head, ask.include_usage));
    }
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(stats) => return Ok(json_response(StatusCode::OK, &head.whole(text, &stats))),
            Event::Failed(e) => return Err(gen_error(e)),
            Event::Started { .. } => {}
        }
    }
    Err(gen_error(GenError::Decode("the engine stopped mid-answer".into())))
}

/// A model of another server (Ollama's, or an added OpenAI-compatible one) answers: its stream becomes the same events as the slot
/// engine's, on a thread of its own; the client leaving stops it. A grammar (response_format)
/// and a raw prompt (/v1/completions) need a GGUF model here.
fn pass_through(remote: crate::engine::types::Remote, prompt: Prompt, sampling: Sampling, constrained: bool, tx: tokio::sync::mpsc::UnboundedSender<Event>) -> Result<(), ApiError> {
    let messages = match prompt {
        Prompt::Chat(m) => m,
        Prompt::Text(_) => return Err(bad("model", format!("{} is answered by another server, which takes chat messages only; use /v1/chat/completions.", remote.describe()))),
    };
    if constrained {
        return Err(bad("response_format", format!("{} is answered by another server; response_format needs a GGUF model of this one.", remote.describe())));
    }
    std::thread::spawn(move || {
        let _ = tx.send(Event::Started { waited_secs: 0.0, prompt_tokens: 0 });
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let mut first = true;
        let r = remote.generate(&messages, &sampling, &cancel, &mut |t| {
            // The first piece opens the answer, as the slot engine's first token does.
            if std::mem::take(&mut first) && tx.send(Event::Text(String::new())).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            if tx.send(Event::Text(t.to_string())).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
        });
        let _ = tx.send(match r {
            Ok((_, stats)) => Event::Done(stats),
            Err(e) => Event::Failed(GenError::Load(e)),
        });
    });
    Ok(())
}

/// The answer as server-sent events: the first chunk (the role, for chat) when the first token is
/// sampled, then one per piece of text, the final one with its finish reason, the usage
/// chunk if asked, then `[DONE]`. An error mid-answer is sent as an `error` object, then the end.
fn stream(rx: UnboundedReceiver<Event>, head: Head, include_usage: bool) -> Response {
    struct St {
        rx: UnboundedReceiver<Event>,
        head: Head,
        include_usage: bool,
        out: VecDeque<String>,
        first: bool,
        done: bool,
    }
    let st = St { rx, head, include_usage, out: VecDeque::new(), first: true, done: false };
    let events = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(data) = st.out.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                // The first chunk (with the role) goes out when the first token is sampled.
                Some(Event::Text(t)) if st.first || !t.is_empty() => {
                    let c = st.head.chunk(Some(&t), st.first, None, st.include_usage);
                    st.first = false;
                    st.out.push_back(c);
                }
                Some(Event::Text(_)) => {}
                Some(Event::Done(stats)) => {
                    st.out.push_back(st.head.chunk(None, false, Some(stats.stop), st.include_usage));
                    if st.include_usage {
                        st.out.push_back(st.head.usage_chunk(&stats));
                    }
                    st.out.push_back("[DONE]".into());
                    st.done = true;
                }
                Some(Event::Failed(e)) => {
                    let e = gen_error(e);
                    st.out.push_back(json!({"error": {"message": e.message, "type": e.kind, "code": e.code, "param": null}}).to_string());
                    st.done = true;
                }
                Some(Event::Started { .. }) => {}
                None => st.done = true,
            }
        }
    });
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = parse(&json!({"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, {"role": "user", "content": "hi"}], "max_completion_tokens": 5, "max_tokens": 9, "stop": "###", "seed": 7, "temperature": 0}), Kind::Chat).unwrap();
        let Prompt::Chat(m) = &ok.prompt else { panic!() };
        assert_eq!((m[0].role.as_str(), m[0].content.as_str(), m[1].role.as_str()), ("system", "Be brief.", "user"));
        assert_eq!((ok.sampling.max_tokens, ok.sampling.seed, ok.sampling.temperature), (5, 7, 0.0));
        assert_eq!(ok.sampling.stop, ["###"]);
        assert!(!ok.stream && ok.grammar.is_none());
        let code = |v: Value, kind| parse(&v, kind).unwrap_err().code;
        assert_eq!(code(json!({"messages": []}), Kind::Chat), "invalid_model");
        assert_eq!(code(json!({"model": "m", "messages": []}), Kind::Chat), "invalid_messages");
        assert_eq!(code(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), Kind::Chat), "invalid_role");
        assert_eq!(code(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), Kind::Chat), "invalid_content");
        assert_eq!(code(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}), Kind::Chat), "invalid_value");
        assert_eq!(code(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}), Kind::Chat), "invalid_n");
        assert_eq!(code(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}), Kind::Chat), "invalid_value");
        assert_eq!(code(json!({"model": "m", "prompt": [1, 2]}), Kind::Completion), "invalid_prompt");
        assert_eq!(code(json!({"model": "m", "prompt": "x", "stop": [1]}), Kind::Completion), "invalid_stop");
        assert_eq!(code(json!({"model": "m", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}), Kind::Completion), "invalid_response_format");
        let biased = parse(&json!({"model": "m", "prompt": "x", "logit_bias": {"2": -100, "17": 5.5}}), Kind::Completion).unwrap();
        let mut biases = biased.sampling.logit_bias.clone();
        biases.sort_by_key(|b| b.0);
        assert_eq!(biases, [(2, -100.0), (17, 5.5)]);
        for bad_bias in [json!([1]), json!({"x": 1}), json!({"+5": 1}), json!({"5": 101}), json!({"5": "1"}), json!({"9999999999": 1})] {
            assert_eq!(code(json!({"model": "m", "prompt": "x", "logit_bias": bad_bias}), Kind::Completion), "invalid_logit_bias", "{bad_bias}");
        }
        let many: serde_json::Map<String, Value> = (0..301).map(|i| (i.to_string(), json!(1))).collect();
        assert_eq!(code(json!({"model": "m", "prompt": "x", "logit_bias": many}), Kind::Completion), "invalid_logit_bias");
    }

    /// llama.cpp's converter makes the grammars (its `common` library is built for it).
    #[test]
    fn response_formats_become_grammars() {
        let any = grammar(&json!({"response_format": {"type": "json_object"}})).unwrap().unwrap();
        assert!(any.contains("root ::="), "{any}");
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false});
        let g = grammar(&json!({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})).unwrap().unwrap();
        assert!(g.contains("\"\\\"ok\\\"\""), "{g}");
        assert_eq!(grammar(&json!({"response_format": {"type": "text"}})).unwrap(), None);
    }

    #[test]
    fn chunks_carry_what_the_client_validates() {
        let h = Head::new("m".into(), Kind::Chat);
        let first: Value = serde_json::from_str(&h.chunk(Some(""), true, None, true)).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first["usage"].is_null() && first.get("usage").is_some());
        let stats = Stats { prompt_tokens: 3, reused_tokens: 0, prompt_secs: 0.0, first_token_secs: 0.0, generated_tokens: 2, generation_secs: 0.0, context_used: 5, context_size: 9, stop: StopReason::MaxTokens };
        let last: Value = serde_json::from_str(&h.chunk(None, false, Some(stats.stop), false)).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        let u: Value = serde_json::from_str(&h.usage_chunk(&stats)).unwrap();
        assert_eq!((u["choices"].as_array().unwrap().len(), u["usage"]["total_tokens"].as_u64()), (0, Some(5)));
    }
}
