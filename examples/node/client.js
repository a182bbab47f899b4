#!/usr/bin/env node
// A Node client of agentic-backend built from the committed descriptor set alone: no
// .proto files, no codegen, no build step. It creates a project, uploads a CSV, profiles
// it, watches the task to the end, and shows how a bad request's field violations read.
//
//   AGENTIC_ADDRESS=127.0.0.1:50051 AGENTIC_TOKEN=... node client.js [file.csv]
//
// Every line it prints is `what key=value ...` (strings JSON-quoted when they hold spaces),
// so scripts and tests can parse it. Exit code 0 when the profile SUCCEEDED, 1 otherwise.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const descriptor = require("protobufjs/ext/descriptor");

const ADDRESS = process.env.AGENTIC_ADDRESS || "127.0.0.1:50051";
const TOKEN = process.env.AGENTIC_TOKEN || "";
const CA_FILE = process.env.AGENTIC_CA_FILE || ""; // PEM CA of the server: TLS when set
const PROTOSET =
  process.env.AGENTIC_PROTOSET || path.resolve(__dirname, "..", "..", "protos", "agentic.protoset");
const CSV = process.argv[2] || path.join(__dirname, "sample.csv");

const CALL_SECONDS = 10; // deadline of every unary call
const WATCH_SECONDS = 300; // deadline of the whole watch, reconnects included
const CHUNK = 64 * 1024; // Write chunks: the server takes up to 1 MiB per message

// --- the contract -------------------------------------------------------------------
// One file holds every service and message plus their imports (buf/validate,
// google/protobuf, google/rpc): proto-loader builds the service clients from it, and
// protobufjs the types to decode error details with.
const protoset = fs.readFileSync(PROTOSET);
const definition = protoLoader.loadFileDescriptorSetFromBuffer(protoset, {
  keepCase: true, // field names as in the .proto files and docs/api.md
  longs: String, // int64 as decimal strings: no precision loss
  enums: String, // enum values by name
  defaults: true,
  oneofs: true, // a oneof's set member name, e.g. item: "event"
});
const api = grpc.loadPackageDefinition(definition);
const types = protobuf.Root.fromDescriptor(descriptor.FileDescriptorSet.decode(protoset));

function credentials() {
  return CA_FILE
    ? grpc.credentials.createSsl(fs.readFileSync(CA_FILE))
    : grpc.credentials.createInsecure();
}

const clients = {
  projects: new api.agentic.projects.v1.ProjectService(ADDRESS, credentials()),
  artifacts: new api.agentic.artifacts.v1.ArtifactService(ADDRESS, credentials()),
  tasks: new api.agentic.tasks.v1.TaskService(ADDRESS, credentials()),
};

// --- calls --------------------------------------------------------------------------

function metadata() {
  const md = new grpc.Metadata();
  if (TOKEN) md.set("authorization", `Bearer ${TOKEN}`);
  return md;
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

// A unary call as a promise, with a token and a deadline.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: deadline(CALL_SECONDS) }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

function quote(value) {
  const text = String(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

function line(what, fields) {
  const parts = Object.entries(fields).map(([key, value]) => `${key}=${quote(value)}`);
  console.log([what, ...parts].join(" "));
}

// The google.rpc.Status a server attaches to an error (grpc-status-details-bin), with its
// details (ErrorInfo, BadRequest, ...) unpacked from their Any by type URL.
function statusDetails(err) {
  const raw = err.metadata && err.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return [];
  const status = types.lookupType("google.rpc.Status").decode(raw);
  return status.details.map((any) => {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    return { name, value: types.lookupType(name).decode(any.value) };
  });
}

// --- the steps ----------------------------------------------------------------------

async function createProject() {
  const name = `node-example-${crypto.randomBytes(4).toString("hex")}`;
  const { project } = await call(clients.projects, "CreateProject", { project: { name } });
  line("project", { id: project.id, name: project.name });
  return project;
}

// Write `bytes` to an upload from the committed size on (0 for a new upload; after a
// broken stream, QueryWriteStatus says where to go on), honouring the stream's backpressure.
function write(uploadName, bytes, offset) {
  return new Promise((resolve, reject) => {
    const stream = clients.artifacts.Write(
      metadata(),
      { deadline: deadline(CALL_SECONDS * 6) },
      (err, response) => (err ? reject(err) : resolve(response)),
    );
    let first = true;
    const next = () => {
      while (offset < bytes.length || first) {
        const data = bytes.subarray(offset, offset + CHUNK);
        const request = {
          resource_name: first ? uploadName : "",
          write_offset: offset,
          data,
          finish_write: offset + data.length === bytes.length,
        };
        first = false;
        offset += data.length;
        if (!stream.write(request) && offset < bytes.length) {
          stream.once("drain", next);
          return;
        }
      }
      stream.end();
    };
    next();
  });
}

async function upload(projectId, file) {
  const bytes = fs.readFileSync(file);
  const created = await call(clients.artifacts, "CreateUpload", {
    project_id: projectId,
    name: path.basename(file),
    kind: "ARTIFACT_KIND_DATASET",
    format: "DATASET_FORMAT_CSV",
    content_type: "text/csv",
    size_bytes: bytes.length, // the finish checks the size ...
    sha256: crypto.createHash("sha256").update(bytes).digest("hex"), // ... and the digest
  });
  const status = await call(clients.artifacts, "QueryWriteStatus", {
    resource_name: created.upload_name,
  });
  const written = await write(created.upload_name, bytes, Number(status.committed_size));
  const { artifact } = await call(clients.artifacts, "GetArtifact", { id: created.artifact.id });
  line("artifact", {
    id: artifact.id,
    committed_size: written.committed_size,
    sha256: artifact.sha256,
    state: artifact.state,
  });
  return artifact;
}

async function submitProfile(projectId, artifactId) {
  const { task } = await call(clients.tasks, "SubmitProfileDataset", {
    request_id: crypto.randomUUID(), // idempotency key: resubmitting returns the same task
    project_id: projectId,
    profile_dataset: { dataset: { artifact_id: artifactId } },
  });
  line("task", { id: task.id, kind: task.kind, state: task.state });
  return task;
}

// Every event of a task until its terminal one. A broken stream is resumed from the last
// sequence received (no gaps, no repeats), a few times, within WATCH_SECONDS in all.
async function watch(taskId) {
  const end = deadline(WATCH_SECONDS);
  let after = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      const final = await new Promise((resolve, reject) => {
        let last = null;
        const stream = clients.tasks.WatchTask({ id: taskId, after_sequence: after }, metadata(), {
          deadline: end,
        });
        stream.on("data", (item) => {
          if (item.item !== "event") return; // a heartbeat: the stream is alive
          const event = item.event;
          after = Number(event.sequence);
          line("progress", {
            sequence: event.sequence,
            state: event.state.replace("TASK_STATE_", ""),
            fraction: event.progress ? event.progress.fraction.toFixed(2) : "0.00",
            message: (event.progress && event.progress.message) || "-",
          });
          if (event.terminal) last = event.task;
        });
        stream.on("error", reject);
        stream.on("end", () => (last ? resolve(last) : reject(new Error("stream ended early"))));
      });
      return final;
    } catch (err) {
      if (err.code !== grpc.status.UNAVAILABLE || attempt >= 4) throw err;
      line("reconnect", { after_sequence: after, reason: err.details || err.message });
      await new Promise((r) => setTimeout(r, 200 * 2 ** attempt * (0.5 + Math.random())));
    }
  }
}

// A request that breaks a rule of the contract (top_k is 0 to 100): INVALID_ARGUMENT with
// a google.rpc.BadRequest naming the field.
async function showViolation(projectId, artifactId) {
  try {
    await call(clients.tasks, "SubmitProfileDataset", {
      request_id: crypto.randomUUID(),
      project_id: projectId,
      profile_dataset: { dataset: { artifact_id: artifactId }, top_k: 1000 },
    });
  } catch (err) {
    const code = Object.keys(grpc.status).find((name) => grpc.status[name] === err.code);
    for (const { name, value } of statusDetails(err)) {
      if (name === "google.rpc.ErrorInfo") {
        line("error", { code, reason: value.reason, domain: value.domain });
      } else if (name === "google.rpc.BadRequest") {
        for (const v of value.field_violations) {
          line("violation", { field: v.field, message: v.description });
        }
      }
    }
    return;
  }
  throw new Error("the bad request was accepted");
}

async function main() {
  const project = await createProject();
  const artifact = await upload(project.id, CSV);
  const task = await submitProfile(project.id, artifact.id);
  const final = await watch(task.id);
  const state = final.state.replace("TASK_STATE_", "");
  if (final.outcome === "profile_dataset_result") {
    const { profile, report_artifact_id } = final.profile_dataset_result;
    line("result", {
      row_count: profile.row_count,
      columns: profile.columns.map((c) => c.column.name).join(","),
      report_artifact_id,
    });
  } else if (final.error) {
    line("failed", { code: final.error.code, message: final.error.message });
  }
  await showViolation(project.id, artifact.id);
  line("final", { task: final.id, state });
  return state === "SUCCEEDED" ? 0 : 1;
}

main()
  .then((code) => {
    process.exitCode = code;
  })
  .catch((err) => {
    line("fatal", { code: err.code === undefined ? "-" : err.code, message: err.details || err.message });
    process.exitCode = 1;
  })
  .finally(() => Object.values(clients).forEach((client) => client.close()));
