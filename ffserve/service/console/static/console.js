// ffserve web console: a WebSocket client of docs/protocol.md in plain JavaScript.
//
// One connection per job: start_job announcing the files (chunked upload, section 8.4)
// and asking for chunked delivery; the files go up a chunk at a time, paced by the
// server's upload_progress; the outputs come back as chunks, joined into Blobs for the
// preview and the download link. The option form is built from /console/schema.json,
// which the server generates from its option classes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // Chunks sent and not yet acknowledged by upload_progress, per upload.
  const WINDOW = 4;
  // sha256 is optional (section 8.4); crypto.subtle.digest needs the whole file in
  // memory, so larger files go without one (and it exists only in secure contexts:
  // https, localhost, 127.0.0.1).
  const HASH_LIMIT = 256 * 1024 * 1024;
  const MIME = {
    mp4: "video/mp4", mov: "video/quicktime", webm: "video/webm", mkv: "video/x-matroska",
    ogv: "video/ogg", "3gp": "video/3gpp", avi: "video/x-msvideo", ts: "video/mp2t",
    flv: "video/x-flv", mp3: "audio/mpeg", aac: "audio/aac", m4a: "audio/mp4",
    wav: "audio/wav", flac: "audio/flac", ogg: "audio/ogg", opus: "audio/ogg",
    jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", gif: "image/gif",
    srt: "text/plain", ass: "text/plain", vtt: "text/vtt",
  };

  let schema = null;
  let files = [];
  let readOptions = () => ({});
  let job = null;

  // --- the option form, from the schema -------------------------------------------

  function hint(field) {
    const parts = [field.type];
    if (field.enum) parts.push("one of " + field.enum.join(", "));
    if (field.minimum !== undefined) parts.push(`${field.minimum} to ${field.maximum}`);
    if (field.default !== undefined && field.default !== null) parts.push(`default ${field.default}`);
    return parts.join(" · ");
  }

  // An input for one scalar field; returns [element, read] where read() gives the value
  // to send or undefined (left out: the server's default).
  function fieldInput(field, id) {
    if (field.type === "boolean") {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = id;
      box.checked = field.default === true;
      return [box, () => (box.checked === (field.default === true) ? undefined : box.checked)];
    }
    if (field.enum) {
      const select = document.createElement("select");
      select.id = id;
      if (!field.required) select.add(new Option(field.default == null ? "(none)" : `(default: ${field.default})`, ""));
      for (const choice of field.enum) select.add(new Option(String(choice), String(choice)));
      const read = () => {
        if (select.value === "") return undefined;
        return field.type === "string" ? select.value : Number(select.value);
      };
      return [select, read];
    }
    const input = document.createElement("input");
    input.id = id;
    if (field.type === "integer" || field.type === "number") {
      input.type = "number";
      input.step = field.type === "integer" ? "1" : "any";
      if (field.minimum !== undefined) input.min = field.minimum;
      if (field.maximum !== undefined) input.max = field.maximum;
    } else {
      input.type = "text";
    }
    input.required = field.required;
    input.placeholder = field.required ? "required" : (field.default == null ? "optional" : String(field.default));
    const read = () => {
      if (input.value.trim() === "") return undefined;
      return input.type === "number" ? Number(input.value) : input.value;
    };
    return [input, read];
  }

  function addRow(container, field, prefix) {
    const label = document.createElement("label");
    const id = `${prefix}${field.name}`;
    label.htmlFor = id;
    label.textContent = field.name;
    if (field.required) label.classList.add("required");
    const [input, read] = fieldInput(field, id);
    input.title = hint(field);
    container.append(label, input);
    return read;
  }

  // `filter`'s list of filter objects: add, fill and remove items of any variant.
  function listInput(container, field) {
    const box = document.createElement("div");
    box.className = "filters";
    const items = [];
    const controls = document.createElement("div");
    controls.className = "row";
    const kind = document.createElement("select");
    kind.id = `opt-${field.name}-type`;
    for (const name of Object.keys(field.variants)) kind.add(new Option(name, name));
    const add = document.createElement("button");
    add.type = "button";
    add.textContent = `Add ${field.name.replace(/s$/, "")}`;
    controls.append(kind, add);
    box.append(controls);
    add.addEventListener("click", () => {
      if (items.length >= field.maxItems) return;
      const type = kind.value;
      const set = document.createElement("fieldset");
      const legend = document.createElement("legend");
      legend.textContent = type + " ";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      legend.append(remove);
      set.append(legend);
      const n = items.length;
      const reads = field.variants[type].map((f) => [f.name, addRow(set, f, `opt-${field.name}-${n}-`)]);
      const item = { type, reads };
      items.push(item);
      remove.addEventListener("click", () => { items.splice(items.indexOf(item), 1); set.remove(); });
      box.insertBefore(set, controls);
    });
    container.append(box);
    return () => items.map(({ type, reads }) => {
      const value = { type };
      for (const [name, read] of reads) {
        const v = read();
        if (v !== undefined) value[name] = v;
      }
      return value;
    });
  }

  function renderOptions() {
    const operation = schema.operations[$("operation").value];
    const container = $("options");
    container.replaceChildren();
    const reads = operation.fields.map((field) => [
      field.name,
      field.type === "array" ? listInput(container, field) : addRow(container, field, "opt-"),
    ]);
    readOptions = () => {
      const options = {};
      for (const [name, read] of reads) {
        const value = read();
        if (value !== undefined) options[name] = value;
      }
      return options;
    };
  }

  // --- files ---------------------------------------------------------------------

  function setFiles(list) {
    files = [...list];
    const ul = $("file-list");
    ul.replaceChildren(...files.map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.name} (${size(f.size)})`;
      return li;
    }));
    const count = $("opt-file_count");
    if (count && files.length > 1) count.value = files.length;
  }

  function size(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
    return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  async function sha256(file) {
    if (!window.crypto || !crypto.subtle || file.size > HASH_LIMIT) return undefined;
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- the job -------------------------------------------------------------------

  function show(state, stage, percent, message) {
    $("job").dataset.state = state;
    $("stage").textContent = stage;
    if (percent !== undefined) {
      $("progress").value = percent;
      $("percent").textContent = `${percent.toFixed(0)} %`;
    }
    if (message !== undefined) $("message").textContent = message;
  }

  function clearResults() {
    for (const a of $("results").querySelectorAll("a[href^='blob:']")) URL.revokeObjectURL(a.href);
    $("results").replaceChildren();
    $("metadata-box").hidden = true;
    $("percent").textContent = "";
    $("progress").value = 0;
  }

  function serviceUrl(token) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.hostname}:${schema.ws_port}/`;
    return token ? `${url}?access_token=${encodeURIComponent(token)}` : url;
  }

  function connect(token) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(serviceUrl(token));
      ws.binaryType = "arraybuffer";
      ws.onopen = () => resolve(ws);
      ws.onerror = () => {
        const why = schema.auth_required && !token ? " (this server needs a token)" : "";
        reject(new Error(`cannot connect to ${serviceUrl("")}${why}`));
      };
    });
  }

  // One binary frame: u32 header length, JSON header, bytes (section 4). A Blob of a
  // File slice: the browser reads it from disk as it sends.
  function frame(header, body) {
    const head = new TextEncoder().encode(JSON.stringify(header));
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, head.length);
    return new Blob([length, head, body]);
  }

  function pump() {
    const chunk = schema.chunk_bytes;
    while (job.file < job.files.length) {
      const file = job.files[job.file];
      if (job.offset >= file.size) {
        job.file += 1;
        job.offset = 0;
        job.acked = 0;
        continue;
      }
      if (job.offset - job.acked >= WINDOW * chunk) return;
      const end = Math.min(file.size, job.offset + chunk);
      job.ws.send(frame({ job_id: job.id, filename: file.name, offset: job.offset }, file.slice(job.offset, end)));
      job.offset = end;
    }
  }

  function finish(state, stage, message) {
    show(state, stage, state === "done" ? 100 : undefined, message);
    if (job && job.ws) job.ws.close(1000);
    job = null;
    $("start").disabled = false;
    $("cancel").disabled = true;
  }

  function onText(msg) {
    const total = job.files.reduce((sum, f) => sum + f.size, 0);
    switch (msg.type) {
      case "ack":
        show("running", "uploading", 0, msg.message);
        break;
      case "upload_progress": {
        if (msg.file === job.file) job.acked = msg.received_bytes;
        const before = job.files.slice(0, msg.file).reduce((sum, f) => sum + f.size, 0);
        show("running", `uploading ${job.files.length > 1 ? `file ${msg.file + 1} of ${job.files.length}` : ""}`.trim(),
          (100 * (before + msg.received_bytes)) / total);
        pump();
        break;
      }
      case "progress":
        show("running", msg.stage, msg.percentage);
        break;
      case "completed":
        job.outputs = msg.outputs || [msg.output_metadata];
        job.parts = job.outputs.map(() => []);
        job.received = 0;
        $("metadata").textContent = JSON.stringify(msg.outputs || msg.output_metadata, null, 2);
        $("metadata-box").hidden = false;
        if (msg.delivery_method === "none") finish("done", "done", msg.message);
        else show("running", "downloading", 0, msg.message);
        break;
      case "error":
        if (msg.job_id !== undefined && msg.job_id !== job.id) break;
        finish(msg.code === "JOB_CANCELLED" ? "cancelled" : "failed",
          msg.code === "JOB_CANCELLED" ? "cancelled" : "failed", `${msg.code}: ${msg.message}`);
        break;
      default:
        break;
    }
  }

  function onBinary(buffer) {
    const view = new DataView(buffer);
    const length = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const index = header.index || 0;
    const body = new Uint8Array(buffer, 4 + length);
    job.parts[index].push(body);
    job.received += body.length;
    const expected = job.outputs.reduce((sum, o) => sum + (o.size_bytes || 0), 0);
    if (expected) show("running", "downloading", Math.min(100, (100 * job.received) / expected));
    if (header.final) {
      addResult(job.outputs[index], header.filename, job.parts[index]);
      job.parts[index] = [];
      job.finals = (job.finals || 0) + 1;
      if (job.finals === job.outputs.length) finish("done", "done");
    }
  }

  function addResult(meta, filename, parts) {
    const format = (meta.format || filename.split(".").pop() || "").toLowerCase();
    const type = MIME[format] || "application/octet-stream";
    const url = URL.createObjectURL(new Blob(parts, { type }));
    const box = document.createElement("figure");
    box.className = "result";
    let preview = null;
    if (type.startsWith("image/")) {
      preview = document.createElement("img");
      preview.alt = filename;
    } else if (type.startsWith("video/")) {
      preview = document.createElement("video");
      preview.controls = true;
    } else if (type.startsWith("audio/")) {
      preview = document.createElement("audio");
      preview.controls = true;
    }
    if (preview) {
      preview.src = url;
      box.append(preview);
    }
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    link.textContent = `Download ${filename} (${size(meta.size_bytes || 0)})`;
    box.append(link);
    $("results").append(box);
  }

  async function start(event) {
    event.preventDefault();
    if (job) return;
    const form = $("job-form");
    if (!form.reportValidity()) return;
    if (!files.length) { show("failed", "no input", 0, "Choose or drop a file first."); return; }
    if (files.some((f) => f.size === 0)) { show("failed", "no input", 0, "Empty files cannot be sent."); return; }
    const token = $("token").value.trim();
    const operation = $("operation").value;
    const options = readOptions();
    clearResults();
    $("start").disabled = true;
    $("cancel").disabled = false;
    job = { id: `console-${Date.now().toString(36)}`, files, file: 0, offset: 0, acked: 0, ws: null, cancelled: false };
    const mine = job;
    try {
      show("running", "checksumming", 0, "");
      const specs = [];
      for (const f of files) {
        const digest = await sha256(f);
        specs.push(digest ? { size: f.size, sha256: digest } : { size: f.size });
      }
      if (mine.cancelled) return;
      show("running", "connecting", 0);
      const ws = await connect(token);
      if (mine.cancelled) { ws.close(1000); return; }
      mine.ws = ws;
      ws.onmessage = (ev) => {
        if (job !== mine) return;
        if (typeof ev.data === "string") onText(JSON.parse(ev.data));
        else onBinary(ev.data);
      };
      ws.onclose = (ev) => {
        if (job === mine) finish("failed", "disconnected", `connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
      };
      ws.send(JSON.stringify({
        type: "start_job", job_id: mine.id, operation, options,
        input: { source: "upload", files: specs }, delivery: { mode: "chunked" },
      }));
      pump();
    } catch (error) {
      if (job === mine) finish("failed", "failed", error.message);
    }
  }

  function cancel() {
    if (!job) return;
    if (job.ws) {
      job.ws.send(JSON.stringify({ type: "cancel_job", job_id: job.id }));
      show("running", "cancelling");
    } else {
      job.cancelled = true;
      finish("cancelled", "cancelled", "");
    }
  }

  // --- start-up ------------------------------------------------------------------

  async function init() {
    schema = await (await fetch("/console/schema.json")).json();
    const select = $("operation");
    for (const name of Object.keys(schema.operations)) select.add(new Option(name, name));
    select.addEventListener("change", renderOptions);
    renderOptions();
    $("server-info").textContent =
      `jobs on ${serviceUrl("")} · chunks of ${size(schema.chunk_bytes)} · ` +
      `inputs up to ${size(schema.max_upload_bytes)}`;
    $("token-note").textContent = schema.auth_required
      ? "This server requires a token; it is sent as access_token in the WebSocket URL."
      : "This server does not require a token.";
    const input = $("file-input");
    input.addEventListener("change", () => setFiles(input.files));
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      setFiles(e.dataTransfer.files);
    });
    $("job-form").addEventListener("submit", start);
    $("cancel").addEventListener("click", cancel);
    document.body.dataset.ready = "true";
  }

  init().catch((error) => show("failed", "failed", 0, `cannot load the console: ${error.message}`));
})();
