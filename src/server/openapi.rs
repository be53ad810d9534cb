//! The API's own description: each route's OpenAPI 3.1 operation (request, responses, every error
//! status it can give), put together by `document` from the route table in mod.rs (the table
//! that also builds the router, so a route cannot go undocumented), served at `/openapi.json`;
//! and `/docs`, a page that renders that document in the browser with nothing from the internet.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

/// The error statuses a route gives, each with OpenAI's error body.
fn errors(codes: &[u16]) -> Map<String, Value> {
    let said = |c: u16| match c {
        400 => "The request is malformed or asks for something the model cannot do (the message says which field).",
        401 => "The API key is missing or wrong (the server was started with one).",
        403 => "Not allowed here, however it is asked: SQL that writes or reads files or settings, a path outside the folders the server allows.",
        404 => "No such model, run, conversation, collection or job, or no such route.",
        405 => "The route does not take this method.",
        409 => "Another process or job holds what the request needs (the message says which).",
        413 => "The body is over 8 MiB.",
        500 => "The engine failed while answering.",
        503 => "Every slot is busy and the queue is full (Retry-After: 1), the model cannot be loaded, or the server is stopping.",
        _ => "An error.",
    };
    codes
        .iter()
        .map(|&c| (c.to_string(), json!({"description": said(c), "content": {"application/json": {"schema": schema("Error")}}})))
        .collect()
}

fn op(summary: &str, description: &str, request: Option<&str>, ok: Value, codes: &[u16]) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".into(), ok);
    let mut v = json!({"summary": summary, "description": description, "responses": responses});
    if let Some(r) = request {
        v["requestBody"] = body(r);
    }
    v
}

fn ok_json(name: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn ok_stream(whole: &str, chunk: &str) -> Value {
    json!({
        "description": "The answer: whole as JSON, or with `stream: true` as server-sent events, each `data:` a chunk, ending `data: [DONE]`.",
        "content": {"application/json": {"schema": schema(whole)}, "text/event-stream": {"schema": {"type": "string", "description": format!("`data: ` lines, each a {chunk} as JSON, then `data: [DONE]`.")}}}
    })
}

pub fn health() -> Value {
    op("Whether the server can answer", "200 when it can; 503 while a model loads.", None, json!({"description": "Ready.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}), &[401, 503])
}

pub fn metrics() -> Value {
    let text = json!({"description": "Prometheus' text format 0.0.4; every name starts lathe_.", "content": {"text/plain": {"schema": {"type": "string"}}}});
    op("Figures for Prometheus", "HTTP requests and durations by route and status, answers running, waiting and refused, tokens and seconds, time to first token, queue wait, jobs by kind and status, models loaded, resident memory.", None, text, &[401])
}

pub fn models() -> Value {
    op("The models a request may name", "The library's GGUF models (for chat and completions) and embedding models (for embeddings), by name.", None, ok_json("ModelList", "The models."), &[401])
}

pub fn chat() -> Value {
    op(
        "Answer a conversation",
        "Rendered with the model's own chat template; several requests are decoded together in one llama.cpp context. A client that disconnects stops its answer.",
        Some("ChatRequest"),
        ok_stream("ChatCompletion", "ChatCompletionChunk"),
        &[400, 401, 404, 413, 500, 503],
    )
}

pub fn completions() -> Value {
    op("Continue a text", "The prompt as it is (special tokens in it are read as such).", Some("CompletionRequest"), ok_stream("Completion", "CompletionChunk"), &[400, 401, 404, 413, 500, 503])
}

pub fn embeddings() -> Value {
    op("Embed texts", "Sentence embeddings from the library's embedding models (the ones the knowledge engine uses).", Some("EmbeddingRequest"), ok_json("EmbeddingList", "One vector per input, in order."), &[400, 401, 404, 413, 500])
}

fn ok_list(item: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object", "required": ["object", "data"], "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": schema(item)}}}}}})
}

fn ok_events(description: &str) -> Value {
    json!({"description": description, "content": {"text/event-stream": {"schema": {"type": "string", "description": "`data: ` lines, each one service event as JSON (externally tagged: {\"Job\": {\"Progress\": {...}}}); `event: lagged` with {\"missed\": N} when a slow reader missed some."}}}})
}

pub fn datasets() -> Value {
    op("The workspace's datasets", "Each dataset of the catalog with its rows, columns, source and import time.", None, ok_list("Dataset", "The datasets."), &[401, 409, 500])
}

pub fn sql() -> Value {
    op(
        "Read the workspace with SQL",
        "One SELECT over the workspace's own tables and views (datasets, lathe.runs, lathe.metrics, lathe.chats, ...): no writes, no files, no settings, no other database; at most `limit` rows, stopped after `timeout_s`.",
        Some("SqlRequest"),
        ok_json("SqlResult", "The columns and rows."),
        &[400, 401, 403, 409, 413, 500],
    )
}

pub fn runs() -> Value {
    op("Training runs", "Every run, newest first, with its status, losses and speed.", None, ok_list("Run", "The runs."), &[401, 409, 500])
}

pub fn train() -> Value {
    let mut v = op(
        "Start or resume a training run",
        "In a job of this server: it goes on when the client leaves. `resume` continues a run from its last checkpoint; otherwise a library model (a Hugging Face folder, by name) on a view, or with neither the bundled demo; `config` changes training settings (those of `lathe train --print-config`). Refused when it would not fit in memory.",
        Some("TrainRequest"),
        json!({}),
        &[400, 401, 404, 409, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn run() -> Value {
    op("One training run", "The run's row of lathe.runs.", None, ok_json("Run", "The run."), &[401, 404, 409, 500])
}

pub fn run_metrics() -> Value {
    op("A run's metrics", "Per-step train metrics and per-evaluation eval metrics, in step order.", None, ok_list("Metric", "The metrics."), &[401, 404, 409, 500])
}

pub fn conversations() -> Value {
    op("Saved conversations", "Each with its title, model, turn count and last change.", None, ok_list("ConversationSummary", "The conversations."), &[401, 409, 500])
}

pub fn conversation() -> Value {
    op("One conversation", "Its turns (with their figures and sources), system prompt and sampling.", None, ok_json("Conversation", "The conversation."), &[401, 404, 409, 500])
}

pub fn conversation_markdown() -> Value {
    let md = json!({"description": "The conversation as Markdown (what `lathe chats export` writes).", "content": {"text/markdown": {"schema": {"type": "string"}}}});
    op("One conversation as Markdown", "Headed by its title and model; each turn under its role.", None, md, &[401, 404, 409, 500])
}

pub fn collections() -> Value {
    op("Knowledge collections", "Each Lance collection with its model, documents, chunks, size and indexes.", None, ok_list("Collection", "The collections."), &[401, 500])
}

pub fn search() -> Value {
    op("Search a collection", "Vector, full-text or hybrid (reciprocal rank fusion) search with the collection's own model.", Some("SearchRequest"), ok_json("SearchResult", "The hits, best first."), &[400, 401, 404, 413, 500])
}

fn accepted(v: &mut Value) {
    let map = v["responses"].as_object_mut().expect("responses");
    map.remove("200");
    map.insert("202".into(), json!({"description": "The job started; its progress streams at `events`.", "headers": {"Location": {"schema": {"type": "string"}, "description": "/api/jobs/{id}"}}, "content": {"application/json": {"schema": {"type": "object", "required": ["job", "events"], "properties": {"job": {"type": "integer"}, "events": {"type": "string"}}}}}}));
}

pub fn import() -> Value {
    let mut v = op(
        "Import a file as a dataset",
        "A CSV, Parquet or JSON Lines file (or a folder of them) inside a folder the server allows (--allow DIR), imported in a job. A name that exists fails the job unless `replace`.",
        Some("ImportRequest"),
        json!({}),
        &[400, 401, 403, 404, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn ingest() -> Value {
    let mut v = op(
        "Add documents to a collection",
        "Files or folders inside the allowed folders, chunked, embedded and written in a job; with no paths, the collection's recorded sources are read again (only what changed is redone).",
        Some("IngestRequest"),
        json!({}),
        &[400, 401, 403, 404, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn jobs() -> Value {
    op("Jobs", "Every job this server has run (training, export, import, ingest): status, progress and its last message.", None, ok_list("Job", "The jobs."), &[401])
}

pub fn cancel_job() -> Value {
    let mut v = op("Cancel a job", "Asks the job to stop; it ends at its next check (training checkpoints first).", None, json!({"description": "Unused."}), &[400, 401, 404]);
    let map = v["responses"].as_object_mut().expect("responses");
    map.remove("200");
    map.insert("202".into(), json!({"description": "Cancelling.", "content": {"application/json": {"schema": {"type": "object", "required": ["id", "cancelling"], "properties": {"id": {"type": "integer"}, "cancelling": {"type": "boolean"}}}}}}));
    v
}

pub fn job_events() -> Value {
    op("A job's progress", "The job's events as server-sent events, ending with its Finished event (at once when it has ended).", None, ok_events("The job's events."), &[401, 404])
}

pub fn events() -> Value {
    op("Everything the workspace reports", "The service's events as server-sent events (jobs, training steps, ingest progress, exports) until the server stops.", None, ok_events("The events."), &[401])
}

pub fn tables() -> Value {
    op("Tables and their columns", "Each table and view of the workspace with its columns and their DuckDB types (for completion and a schema browser).", None, ok_list("Table", "The tables."), &[401, 409, 500])
}

pub fn views() -> Value {
    op("Training-set views", "Each view with its split and its first training examples as the model sees them, or why it cannot be read.", None, ok_list("ViewPreview", "The views."), &[401, 409, 500])
}

pub fn library() -> Value {
    op("The model library", "Every model lathe can see (the workspace's models/, added paths, the Hugging Face cache, Ollama's store) with its format, size and the memory it needs; `problem` says why one cannot be used.", None, ok_list("LibraryModel", "The models."), &[401])
}

pub fn export() -> Value {
    let mut v = op(
        "Export a run or a model as GGUF",
        "A run (its base with its adapter merged, or its trained weights) or a library Hugging Face folder, written into the workspace's models/ folder as `lathe export` names it, in a job; with `imatrix`, quantized with an importance matrix computed from a view's training split or a text file (saved beside it as NAME.imatrix.gguf), or read from a file.",
        Some("ExportRequest"),
        json!({}),
        &[400, 401, 403, 404, 409, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn quant_report() -> Value {
    let mut v = op(
        "Measure each quantization of a run or a model",
        "`lathe quant report` in a job: the model exported as f16 once, each type made from it without and with an importance matrix (from `imatrix`, else the run's view, else `view`; training split), and measured against the f16 file on `view`'s eval split or on `text`: size, perplexity, KL divergence, same top token, exact match where the view has answers, prompt and generation tokens/s. Each file's figures land in lathe.quant_evals as it is measured (GET /api/quant-evals); the job's events end with the report.",
        Some("QuantReportRequest"),
        json!({}),
        &[400, 401, 403, 404, 409, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn quant_evals() -> Value {
    op("Quantization reports", "Every file a quantization report measured, newest report first, each report's files largest first.", None, ok_list("QuantEval", "The measured files."), &[401, 409, 500])
}

pub fn check_run() -> Value {
    op(
        "Check a training run before starting it",
        "The plan of the run POST /api/runs would start with the same body: memory needed and free, the split, token lengths and two examples with their trained tokens in [brackets]. Nothing starts.",
        Some("TrainRequest"),
        ok_json("TrainPlan", "The plan (`memory_needed` over `memory_available`: it would be refused)."),
        &[400, 401, 404, 409, 413, 500],
    )
}

pub fn pause() -> Value {
    let ok = json!({"description": "Done.", "content": {"application/json": {"schema": {"type": "object", "required": ["paused"], "properties": {"paused": {"type": "boolean"}}}}}});
    op("Pause or go on training", "Pauses the run training in this server (it keeps its memory and its place) or lets it go on.", Some("PauseRequest"), ok, &[400, 401, 413])
}

pub fn save_conversation() -> Value {
    let ok = json!({"description": "Saved.", "content": {"application/json": {"schema": {"type": "object", "required": ["id", "saved"], "properties": {"id": {"type": "string"}, "saved": {"type": "boolean"}}}}}});
    op("Save a conversation", "The whole record, as GET gives it, under its id: a new conversation or the next version of one.", Some("Conversation"), ok, &[400, 401, 409, 413, 500])
}

pub fn drop_collection() -> Value {
    op("Drop a collection", "Its Lance dataset and its record go; the documents themselves are not touched.", None, dropped(), &[400, 401, 404, 500])
}

fn dropped() -> Value {
    json!({"description": "Dropped.", "content": {"application/json": {"schema": {"type": "object", "required": ["name", "dropped"], "properties": {"name": {"type": "string"}, "dropped": {"type": "boolean"}}}}}})
}

pub fn drop_dataset() -> Value {
    op("Drop a dataset", "Its table and its record go; the file it was imported from is not touched.", None, dropped(), &[400, 401, 404, 409, 500])
}

/// DELETE on an action's path (`/api/datasets/import`): drops the dataset of that name.
pub fn drop_dataset_named(name: &str) -> Value {
    op(
        &format!("Drop the dataset named {name}"),
        &format!("The same as DELETE /api/datasets/{{name}} for a dataset named {name}, whose path is also the {name} action's."),
        None,
        dropped(),
        &[401, 404, 409, 500],
    )
}

pub fn export_data() -> Value {
    let mut v = op(
        "Write a dataset or a query's result to a file",
        "CSV, Parquet or JSON Lines by the path's extension, in a job. The path's folder must exist; a client without the owner's token writes only inside the folders the server allows (--allow DIR), never over a file, and its `sql` is held to /api/sql's rules.",
        Some("DataExportRequest"),
        json!({}),
        &[400, 401, 403, 404, 409, 413, 500],
    );
    accepted(&mut v);
    v
}

pub fn create_view() -> Value {
    op(
        "Define a training-set view",
        "A SELECT over the workspace's datasets shaped as chat, alpaca, completion or text examples, split by a hash of each row (`eval_fraction` held out). A client without the owner's token is held to /api/sql's rules.",
        Some("ViewRequest"),
        ok_json("View", "The view and its split's sizes."),
        &[400, 401, 403, 409, 413, 500],
    )
}

pub fn drop_view() -> Value {
    op("Drop a view", "Its definition goes; the datasets it reads are not touched.", None, dropped(), &[400, 401, 404, 409, 500])
}

pub fn view_examples() -> Value {
    op("A view's examples", "Examples from its train or eval split, as the model is trained on them.", Some("ExamplesRequest"), ok_json("ViewExamples", "The view and its examples."), &[400, 401, 404, 409, 413, 500])
}

pub fn add_model() -> Value {
    let ok = json!({"description": "Added.", "content": {"application/json": {"schema": {"type": "object", "required": ["path", "models"], "properties": {"path": {"type": "string"}, "models": {"type": "integer", "description": "The models found there."}}}}}});
    op(
        "Add models to the library",
        "With `path`: a GGUF file, a Hugging Face folder or a folder of them (nothing is copied), inside the folders the server allows. With `url` (the owner's token only): an OpenAI-compatible server, asked for its models first; they are listed and answered as NAME/MODEL, the key read from the server's environment variable `key_env`.",
        Some("ModelAddRequest"),
        ok,
        &[400, 401, 403, 404, 409, 413, 500],
    )
}

pub fn remove_model() -> Value {
    let ok = json!({"description": "Removed.", "content": {"application/json": {"schema": {"type": "object", "required": ["removed"], "properties": {"removed": {"type": "string"}}}}}});
    op("Take a model source out of the library", "A server (by name) or an added path; nothing on disk is touched.", Some("NameRequest"), ok, &[400, 401, 404, 413, 500])
}

pub fn create_collection() -> Value {
    op("Make a knowledge collection", "An empty Lance collection for an embedding model: a library name, or a folder inside the allowed folders.", Some("CollectionRequest"), ok_json("Collection", "The collection."), &[400, 401, 403, 404, 409, 413, 500])
}

pub fn server_status() -> Value {
    op("This server's figures", "Process, address, uptime, memory, the answering engine's requests and tokens, jobs running (what a workstation attached to it shows).", None, ok_json("ServerStatus", "The figures."), &[401])
}

pub fn openapi_doc() -> Value {
    op("This document", "OpenAPI 3.1, generated from the server's route table.", None, json!({"description": "The document.", "content": {"application/json": {"schema": {"type": "object"}}}}), &[401])
}

pub fn docs_doc() -> Value {
    op("This document as a page", "HTML that renders /openapi.json; it loads nothing from the internet.", None, json!({"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}), &[401])
}

/// The shapes of lathe's own API (/api/): the workspace's records, then what clients use.
fn workspace_schemas() -> Value {
    let mut all = records_schemas();
    if let (Some(a), Value::Object(more)) = (all.as_object_mut(), client_schemas()) {
        a.extend(more);
    }
    all
}

/// What the workstation attached to a server asks for (tables, views, models, exports, plans).
fn client_schemas() -> Value {
    json!({
        "Table": {"type": "object", "required": ["name", "columns"], "properties": {"name": {"type": "string"}, "columns": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}}}},
        "ViewPreview": {"type": "object", "required": ["name", "info", "examples", "error"], "properties": {"name": {"type": "string"}, "info": {"type": ["object", "null"], "description": "The view's SQL, format, eval fraction and split sizes."}, "examples": {"type": "array", "items": {"type": "string"}}, "error": {"type": ["string", "null"]}}},
        "LibraryModel": {"type": "object", "required": ["name", "path", "source", "format", "architecture", "params", "quantization", "context_length", "file_size", "ram_needed"], "properties": {"name": {"type": "string"}, "path": {"type": "string"}, "source": {"type": "string"}, "format": {"type": "string"}, "architecture": {"type": "string"}, "params": {"type": "integer"}, "quantization": {"type": "string"}, "context_length": {"type": "integer"}, "file_size": {"type": "integer"}, "ram_needed": {"type": "integer"}, "problem": {"type": ["string", "null"]}}},
        "ExportRequest": {"type": "object", "properties": {"run": {"type": ["string", "null"], "description": "A run's id."}, "model": {"type": ["string", "null"], "description": "A Hugging Face folder's name in the library."}, "quant": {"enum": quant_names(), "description": "Default f16."}, "imatrix": {"type": ["object", "null"], "description": "One of view (a view's name), text or file (absolute paths inside the allowed folders), with tokens for a computed one.", "properties": {"view": {"type": ["string", "null"]}, "text": {"type": ["string", "null"]}, "file": {"type": ["string", "null"]}, "tokens": {"type": ["integer", "null"], "minimum": 16, "maximum": 100000000}}}}},
        "QuantReportRequest": {"type": "object", "properties": {
            "run": {"type": ["string", "null"], "description": "A run's id."},
            "model": {"type": ["string", "null"], "description": "A Hugging Face folder's name in the library."},
            "view": {"type": ["string", "null"], "description": "Measure on this view's eval split."},
            "text": {"type": ["string", "null"], "description": "Or on this text file (an absolute path inside the allowed folders)."},
            "types": {"type": ["array", "null"], "items": {"enum": crate::engine::export::gguf::Quant::all().map(|q| q.name()).collect::<Vec<_>>()}, "description": "Default: q8_0, q6_k, q5_k_m, q4_k_m, iq4_xs, q3_k_m, q2_k where the model's rows fit them, else the 32-value-block types."},
            "imatrix": {"type": ["object", "null"], "description": "As for exports.", "properties": {"view": {"type": ["string", "null"]}, "text": {"type": ["string", "null"]}, "file": {"type": ["string", "null"]}, "tokens": {"type": ["integer", "null"], "minimum": 16, "maximum": 100000000}}},
            "max_len": {"type": ["integer", "null"], "minimum": 16, "maximum": 1048576, "description": "Chunk length in tokens (default 512)."},
            "eval_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 100000000, "description": "Held-out tokens scored (default 8192)."},
            "exact": {"type": ["integer", "null"], "minimum": 0, "maximum": 100000, "description": "Examples scored for exact match (default 32)."},
            "keep": {"type": ["boolean", "null"], "description": "Keep every quantized file (default: only the f16 file and the matrix)."}}},
        "QuantEval": {"type": "object", "required": ["report", "source", "quant", "imatrix", "eval", "size_bytes", "ppl", "ppl_err", "kld", "kld_err", "same_top", "n_ctx", "chunks", "created_at"], "properties": {
            "report": {"type": "string"}, "source": {"type": "string", "description": "The run id or model folder."}, "quant": {"type": "string"}, "imatrix": {"type": "boolean"},
            "eval": {"type": "string"}, "calibration": {"type": ["string", "null"]}, "path": {"type": ["string", "null"], "description": "The file, where it was kept."},
            "size_bytes": {"type": "integer"}, "ppl": {"type": "number"}, "ppl_err": {"type": "number"}, "kld": {"type": "number", "description": "Mean KL divergence from the f16 file per token, in nats."},
            "kld_err": {"type": "number"}, "same_top": {"type": "number"}, "exact_match": {"type": ["number", "null"]}, "exact_asked": {"type": ["integer", "null"]},
            "prompt_tps": {"type": ["number", "null"]}, "gen_tps": {"type": ["number", "null"]}, "n_ctx": {"type": "integer"}, "chunks": {"type": "integer"}, "created_at": {"type": "string"}}},
        "DataExportRequest": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "minLength": 1, "description": "An absolute path ending .csv, .parquet or .jsonl."}, "dataset": {"type": ["string", "null"]}, "sql": {"type": ["string", "null"], "description": "One SELECT."}}},
        "ViewRequest": {"type": "object", "required": ["name", "sql", "format"], "properties": {"name": {"type": "string", "minLength": 1}, "sql": {"type": "string", "minLength": 1}, "format": {"enum": ["chat", "alpaca", "completion", "text"]}, "eval_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 0.99, "description": "Default 0.05."}, "replace": {"type": ["boolean", "null"]}}},
        "View": {"type": "object", "required": ["name", "sql", "format", "eval_fraction", "train_rows", "eval_rows"], "properties": {"name": {"type": "string"}, "sql": {"type": "string"}, "format": {"type": "string"}, "eval_fraction": {"type": "number"}, "train_rows": {"type": "integer"}, "eval_rows": {"type": "integer"}}},
        "ExamplesRequest": {"type": "object", "properties": {"split": {"enum": ["train", "eval", null], "description": "Default train."}, "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000, "description": "Default 20."}}},
        "ViewExamples": {"type": "object", "required": ["view", "examples"], "properties": {"view": schema("View"), "examples": {"type": "array", "items": {"type": "object", "description": "{messages} for chat, {instruction, input, output} for alpaca, {prompt, completion}, or {text}."}}}},
        "ModelAddRequest": {"type": "object", "properties": {"path": {"type": "string", "minLength": 1, "description": "An absolute path (without url)."}, "url": {"type": ["string", "null"], "description": "An OpenAI-compatible server's base URL (…/v1)."}, "name": {"type": ["string", "null"], "description": "The server's name in the library (its host if none)."}, "key_env": {"type": ["string", "null"], "description": "The environment variable holding the server's API key."}}},
        "NameRequest": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
        "CollectionRequest": {"type": "object", "required": ["name", "model"], "properties": {"name": {"type": "string", "minLength": 1}, "model": {"type": "string", "minLength": 1, "description": "An embedding model's library name or absolute folder."}}},
        "PauseRequest": {"type": "object", "required": ["paused"], "properties": {"paused": {"type": "boolean"}}},
        "TrainPlan": {"type": "object", "required": ["memory_needed", "memory_available", "train_examples", "eval_examples", "max_len", "lengths", "examples"], "properties": {"memory_needed": {"type": "integer"}, "memory_available": {"type": "integer"}, "memory_4bit": {"type": ["integer", "null"]}, "train_examples": {"type": "integer"}, "eval_examples": {"type": "integer"}, "max_len": {"type": "integer"}, "lengths": {"type": "object"}, "examples": {"type": "array", "items": {"type": "string"}}}},
        "ServerStatus": {"type": "object", "required": ["pid", "address", "uptime_s", "rss_bytes", "slots", "running", "waiting", "requests", "rejected", "generated_tokens", "generation_s", "model_loaded", "model_loading", "jobs_running"], "properties": {"pid": {"type": "integer"}, "address": {"type": "string"}, "uptime_s": {"type": "number"}, "rss_bytes": {"type": "integer"}, "slots": {"type": "integer"}, "running": {"type": "integer"}, "waiting": {"type": "integer"}, "requests": {"type": "integer"}, "rejected": {"type": "integer"}, "generated_tokens": {"type": "integer"}, "generation_s": {"type": "number"}, "model_loaded": {"type": "boolean"}, "model_loading": {"type": "boolean"}, "jobs_running": {"type": "integer"}}}
    })
}

fn records_schemas() -> Value {
    json!({
        "Dataset": {"type": "object", "required": ["name", "rows", "columns", "source_bytes", "source", "format", "imported_at"], "properties": {"name": {"type": "string"}, "rows": {"type": "integer"}, "columns": {"type": "integer"}, "source_bytes": {"type": "integer"}, "source": {"type": "string"}, "format": {"type": "string"}, "imported_at": {"type": "string"}}},
        "SqlRequest": {"type": "object", "required": ["sql"], "properties": {"sql": {"type": "string", "minLength": 1, "description": "One SELECT statement."}, "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000, "description": "Rows at most (default 1000); `truncated` says when there were more."}, "timeout_s": {"type": ["number", "null"], "minimum": 0.1, "maximum": 60, "description": "Seconds the statement may run (default 10)."}, "offset": {"type": ["integer", "null"], "minimum": 0, "description": "Rows to skip (default 0): a client pages through a result."}, "count": {"type": ["boolean", "null"], "description": "Also count the statement's rows (`total`)."}}},
        "SqlResult": {"type": "object", "required": ["columns", "rows", "truncated", "elapsed_ms"], "properties": {"columns": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {"name": {"type": "string"}, "type": {"type": "string", "description": "Arrow's name of the column's type."}}}}, "rows": {"type": "array", "items": {"type": "object", "description": "Column name to value."}}, "truncated": {"type": "boolean"}, "elapsed_ms": {"type": "number"}, "total": {"type": "integer", "description": "Every row of the statement, when `count` asked."}}},
        "Run": {"type": "object", "required": ["id", "status", "method", "model", "view", "created_at", "base", "optimizer"], "properties": {"id": {"type": "string"}, "status": {"enum": ["starting", "running", "paused", "completed", "stopped_early", "cancelled", "interrupted", "failed"]}, "method": {"type": "string"}, "model": {"type": "string"}, "view": {"type": "string"}, "created_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]}, "step": {"type": ["integer", "null"]}, "total_steps": {"type": ["integer", "null"]}, "train_loss": {"type": ["number", "null"]}, "eval_loss": {"type": ["number", "null"]}, "best_eval_loss": {"type": ["number", "null"]}, "exact_match": {"type": ["number", "null"]}, "tokens_per_s": {"type": ["number", "null"]}, "peak_rss_bytes": {"type": ["integer", "null"]}, "params": {"type": ["string", "null"], "description": "The run's settings as JSON."}, "artifacts": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]}, "base": {"type": "string"}, "optimizer": {"type": "string"}}},
        "Metric": {"type": "object", "required": ["step", "kind", "loss"], "properties": {"step": {"type": "integer"}, "kind": {"enum": ["train", "eval"]}, "loss": {"type": "number"}, "lr": {"type": ["number", "null"]}, "grad_norm": {"type": ["number", "null"]}, "tokens_per_s": {"type": ["number", "null"]}, "epoch": {"type": ["number", "null"]}, "elapsed_s": {"type": ["number", "null"]}}},
        "ConversationSummary": {"type": "object", "required": ["id", "title", "model", "turns", "updated_at"], "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "model": {"type": "string"}, "turns": {"type": "integer"}, "updated_at": {"type": "string"}}},
        "Conversation": {"type": "object", "required": ["id", "title", "model", "turns", "sampling", "updated_at"], "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "model": {"type": "string"}, "system": {"type": ["string", "null"]}, "updated_at": {"type": "string"}, "sampling": {"type": "object"}, "turns": {"type": "array", "items": {"type": "object", "required": ["role", "text"], "properties": {"role": {"type": "string"}, "text": {"type": "string"}, "stats": {"type": ["object", "null"]}, "retrieval": {"type": ["object", "null"], "description": "The sources the answer was given."}}}}, "compare": {"type": ["object", "null"]}}},
        "Collection": {"type": "object", "required": ["name", "model", "documents", "chunks", "bytes", "version", "vector_index", "text_index"], "properties": {"name": {"type": "string"}, "model": {"type": "object", "description": "The embedding model's identity and dimension."}, "documents": {"type": "integer"}, "chunks": {"type": "integer"}, "bytes": {"type": "integer"}, "sources": {"type": "array", "items": {"type": "string"}}, "version": {"type": "integer"}, "vector_index": {"type": "boolean"}, "text_index": {"type": "boolean"}, "path": {"type": "string"}}},
        "SearchRequest": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string", "minLength": 1}, "mode": {"enum": ["hybrid", "vector", "text", null], "description": "Default hybrid."}, "k": {"type": ["integer", "null"], "minimum": 1, "maximum": 100, "description": "Hits (default 5)."}, "path": {"type": ["string", "null"], "description": "Only documents whose path starts with it or holds it."}}},
        "SearchResult": {"type": "object", "required": ["hits", "mode", "millis", "truncated"], "properties": {"mode": {"enum": ["hybrid", "vector", "text"]}, "millis": {"type": "number"}, "truncated": {"type": "boolean", "description": "The query was longer than the model takes and was cut."}, "hits": {"type": "array", "items": {"type": "object", "required": ["rank", "score", "chunk_id", "path", "first_line", "last_line", "text"], "properties": {"rank": {"type": "integer"}, "score": {"type": "number"}, "chunk_id": {"type": "string"}, "path": {"type": "string"}, "first_line": {"type": "integer"}, "last_line": {"type": "integer"}, "headings": {"type": "string"}, "text": {"type": "string"}, "vector_rank": {"type": ["integer", "null"]}, "text_rank": {"type": ["integer", "null"]}}}}}},
        "TrainRequest": {"type": "object", "properties": {"resume": {"type": ["string", "null"], "description": "A run's id: continue it."}, "model": {"type": ["string", "null"], "description": "A Hugging Face folder's name in the library."}, "view": {"type": ["string", "null"], "description": "A training-set view."}, "config": {"type": ["object", "null"], "description": "Training settings to change (method, lr, max_steps, lora_r, ...)."}}},
        "ImportRequest": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "minLength": 1, "description": "An absolute path inside an allowed folder."}, "name": {"type": ["string", "null"], "description": "The dataset's name (default: from the file's)."}, "replace": {"type": ["boolean", "null"]}}},
        "IngestRequest": {"type": "object", "properties": {"paths": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Absolute paths inside the allowed folders; none: sync the recorded sources."}}},
        "Job": {"type": "object", "required": ["id", "kind", "title", "status", "message"], "properties": {"id": {"type": "integer"}, "kind": {"enum": ["train", "export", "import", "ingest", "quantize", "stress"]}, "title": {"type": "string"}, "status": {"description": "\"running\", \"done\", \"cancelled\", or {\"failed\": why} / {\"exists\": what}."}, "fraction": {"type": ["number", "null"]}, "message": {"type": "string"}}}
    })
}

fn components() -> Value {
    let sampling = json!({
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 2147483647, "description": "Tokens to generate at most (default: until the model ends or its context is full)."},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2, "description": "0 picks the likeliest token; default 0.8."},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "Default 0.95."},
        "seed": {"type": ["integer", "null"], "minimum": -9000000000000000i64, "maximum": 9000000000000000i64, "description": "The same seed and request give the same answer; default random."},
        "stop": {"description": "Up to 16 strings; the answer ends before the first that appears.", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}, {"type": "null"}]},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "logit_bias": {"type": ["object", "null"], "maxProperties": 300, "propertyNames": {"pattern": "^[0-9]{1,9}$"}, "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}, "description": "Token ids of the model's tokenizer (as strings) to biases added to their logits: -100 bans a token, 100 all but forces it. An id the model does not have is a 400."},
        "n": {"type": ["integer", "null"], "enum": [1, null]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean", "description": "A last chunk with no choices and the usage."}}},
        "response_format": {"$ref": "#/components/schemas/ResponseFormat"}
    });
    let with = |extra: Value, required: &[&str]| {
        let mut props = sampling.as_object().cloned().unwrap_or_default();
        props.extend(extra.as_object().cloned().unwrap_or_default());
        json!({"type": "object", "required": required, "properties": props})
    };
    let usage = json!({"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}, "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer", "description": "Prompt tokens taken from the cache (an earlier answer's, or a concurrent request's with the same start) rather than read."}}}}});
    let finish = json!({"type": ["string", "null"], "enum": ["stop", "length", null]});
    let head = |object: &str| json!({"id": {"type": "string"}, "object": {"const": object}, "created": {"type": "integer"}, "model": {"type": "string"}, "system_fingerprint": {"type": "null"}});
    let obj = |object: &str, extra: Value| {
        let mut props = head(object).as_object().cloned().unwrap_or_default();
        props.extend(extra.as_object().cloned().unwrap_or_default());
        json!({"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": props})
    };
    json!({"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string"}, "param": {"type": ["string", "null"]}}}}},
        "Usage": usage,
        "ResponseFormat": {"oneOf": [
            {"type": "null"},
            {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
            {"type": "object", "required": ["type", "json_schema"], "properties": {"type": {"const": "json_schema"}, "json_schema": {"type": "object", "required": ["schema"], "properties": {"name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": "boolean"}}}}}
        ], "description": "json_object and json_schema constrain the answer with the grammar llama.cpp's converter makes from the schema, so it parses."},
        "ChatMessage": {"type": "object", "required": ["role"], "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]}, "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}}},
        "ChatRequest": with(json!({"model": {"type": "string", "description": "A model's name from GET /v1/models: a GGUF file, ollama:NAME (the library's Ollama server) or SERVER/MODEL (an OpenAI-compatible server added to the library), the last two passed through (chat only, no response_format)."}, "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}}, "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 2147483647, "description": "Wins over max_tokens."}}), &["model", "messages"]),
        "CompletionRequest": with(json!({"model": {"type": "string"}, "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1}]}}), &["model", "prompt"]),
        "ChatCompletion": obj("chat.completion", json!({"usage": {"$ref": "#/components/schemas/Usage"}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "message": {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}, "refusal": {"type": "null"}}}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "ChatCompletionChunk": obj("chat.completion.chunk", json!({"usage": {"oneOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "delta": {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "Completion": obj("text_completion", json!({"usage": {"$ref": "#/components/schemas/Usage"}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "CompletionChunk": obj("text_completion", json!({"usage": {"oneOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "EmbeddingRequest": {"type": "object", "required": ["model", "input"], "properties": {"model": {"type": "string"}, "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048}]}, "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer", "minimum": 1, "maximum": 65536, "description": "Only the model's own."}}},
        "EmbeddingList": {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {"object": {"const": "list"}, "model": {"type": "string"}, "data": {"type": "array", "items": {"type": "object", "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"}, "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "description": "base64 of little-endian f32"}]}}}}, "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}}
    },
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required when the server was started with an API key (always off loopback)."}}})
}

/// Every shape: OpenAI's and lathe's own.
fn all_components() -> Value {
    let mut c = components();
    if let (Some(all), Value::Object(more)) = (c["schemas"].as_object_mut(), workspace_schemas()) {
        all.extend(more);
    }
    c
}

/// The document from the route table: (path, method, operation).
pub fn document(routes: &[(&str, &str, Value)]) -> Value {
    let mut paths = Map::new();
    for (path, method, operation) in routes {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut operation = operation.clone();
        // Each `{name}` segment is a path parameter.
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                // A collection's name is letters, digits, `-` and `_` (store.rs refuses others).
                let schema = if name == "name" { json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}) } else { json!({"type": "string", "minLength": 1}) };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "lathe serve", "version": env!("CARGO_PKG_VERSION"), "description": "The workspace's owner over HTTP: OpenAI-compatible inference on the model library's GGUF models, embeddings, health and metrics; lathe's own API under /api/ (datasets, read-only SQL, runs, conversations, knowledge, jobs, events). Every error is {\"error\": {\"message\", \"type\", \"code\"}}."},
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": all_components(),
    })
}

pub fn json_doc(doc: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// The page: reads /openapi.json and lists each route with its request and responses, schemas
/// expanded in place.
pub fn page() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lathe serve: API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace}.m{display:inline-block;width:4rem;font-weight:bold;text-transform:uppercase}
details{border:1px solid #ccc;border-radius:4px;margin:.5rem 0;padding:.3rem .6rem}summary{cursor:pointer}
ul{margin:.2rem 0 .2rem 1.2rem;padding:0}.t{color:#666}.s{color:#a33}
</style></head><body><h1>lathe serve</h1><p id="info"></p><div id="routes">Reading /openapi.json…</div>
<script>
function el(t,c,h){const e=document.createElement(t);if(c)e.className=c;if(h!==undefined)e.textContent=h;return e}
function resolve(doc,s){while(s&&s.$ref){s=s.$ref.split('/').slice(1).reduce((o,k)=>o[k],doc)}return s||{}}
function type(s){return s.const!==undefined?JSON.stringify(s.const):s.enum?s.enum.map(JSON.stringify).join(' | '):[].concat(s.type||(s.oneOf?'one of':'any')).join(' | ')}
function tree(doc,s,depth){s=resolve(doc,s);const ul=el('ul');if(depth>6)return ul;
 const props=s.properties||{},req=new Set(s.required||[]);
 for(const [k,v0] of Object.entries(props)){const v=resolve(doc,v0),li=el('li');li.append(el('code','',k),el('span','t',' '+type(v)+(req.has(k)?' (required)':'')+(v.description?' — '+v.description:'')));li.append(tree(doc,v,depth+1));ul.append(li)}
 for(const alt of (s.oneOf||[])){const li=el('li','t','or '+type(resolve(doc,alt)));li.append(tree(doc,alt,depth+1));ul.append(li)}
 if(s.items){const li=el('li','t','items: '+type(resolve(doc,s.items)));li.append(tree(doc,s.items,depth+1));ul.append(li)}
 return ul}
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
 document.getElementById('info').textContent=doc.info.description+' (version '+doc.info.version+')';
 const box=document.getElementById('routes');box.textContent='';
 for(const [path,ops] of Object.entries(doc.paths))for(const [method,op] of Object.entries(ops)){
  const d=el('details'),s=el('summary');s.append(el('span','m',method),el('code','',path),el('span','t','  '+op.summary));d.append(s,el('p','',op.description));
  if(op.requestBody){d.append(el('h4','','Request'));for(const [ct,c] of Object.entries(op.requestBody.content)){d.append(el('div','t',ct),tree(doc,c.schema,0))}}
  d.append(el('h4','','Responses'));for(const [code,r] of Object.entries(op.responses)){const p=el('div');p.append(el('b',code>=400?'s':'',code+' '),el('span','',r.description));d.append(p);for(const [ct,c] of Object.entries(r.content||{})){if(code==='200'){d.append(el('div','t',ct),tree(doc,c.schema,0))}}}
  box.append(d)}
}).catch(e=>{document.getElementById('routes').textContent='Could not read /openapi.json: '+e})
</script></body></html>
"#;

/// Every export type, and null (the default, f16).
fn quant_names() -> Value {
    let mut names: Vec<Value> = crate::engine::export::gguf::Quant::all().map(|q| json!(q.name())).collect();
    names.push(Value::Null);
    Value::Array(names)
}
