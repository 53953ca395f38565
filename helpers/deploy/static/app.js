"use strict";
// The page of helpers.deploy.serve: upload one image to /segment (and /classify when a classifier is served),
// show the overlay and a per-class table. No build step, no external resources; text goes in via textContent only.

const COLORS = ["#e69f00", "#56b4e9", "#009e73", "#d55e00", "#cc79a7", "#f0e442", "#0072b2"]; // helpers.core.viz
const $ = (id) => document.getElementById(id);
let classifierServed = false;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function post(path, file) {
  const form = new FormData();
  form.append("image", file, file.name);
  const response = await fetch(path, { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status}: ${body.detail}`);
  return body;
}

function showSegmentation(result) {
  $("overlay").src = "data:image/png;base64," + result.overlay_png;
  $("overlay").dataset.image = result.image.name;
  $("caption").textContent = `${result.image.name}: ${result.image.height}x${result.image.width} px (HxW), ` +
    `${(result.seconds * 1000).toFixed(0)} ms on the server`;
  const body = $("classes").tBodies[0];
  body.replaceChildren();
  for (const c of result.classes) {
    const row = body.insertRow();
    row.dataset.classId = c.class_id;
    const id = cell(row, String(c.class_id));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[(c.class_id - 1) % COLORS.length];
    id.prepend(swatch);
    cell(row, c.name, "name");
    cell(row, String(c.area), "area").dataset.value = c.area;
    cell(row, c.max_probability.toFixed(4), "max-probability").dataset.value = c.max_probability;
    cell(row, String(c.threshold), "threshold");
    cell(row, String(c.min_area), "min-area");
    cell(row, String(c.rle ? c.rle.split(" ").length / 2 : 0), "runs").dataset.value = c.rle;
  }
  $("result").hidden = false;
  $("classes").hidden = false;
}

function showClassification(result) {
  $("cam").src = "data:image/png;base64," + result.overlay_png;
  const body = $("probabilities").tBodies[0];
  body.replaceChildren();
  for (const c of result.classes) {
    const row = body.insertRow();
    cell(row, c.name + (c.index === result.target ? " (explained)" : ""), "name");
    cell(row, c.probability.toFixed(4), "probability").dataset.value = c.probability;
  }
  $("classifier").hidden = false;
}

async function predict(file) {
  document.body.dataset.state = "busy";
  setStatus(`predicting ${file.name}…`);
  try {
    showSegmentation(await post("/segment?overlay=true", file));
    if (classifierServed) showClassification(await post("/classify", file));
    setStatus("");
    document.body.dataset.state = "done";
  } catch (error) {
    setStatus(error.message, true);
    document.body.dataset.state = "error";
  }
}

async function describe() {
  try {
    const info = await (await fetch("/model/info")).json();
    const size = info.input.size ? `${info.input.size[0]}x${info.input.size[1]}` : `any multiple of ${info.input.multiple}`;
    $("model").textContent = `${info.model} (${info.format}${info.architecture ? `, ${info.architecture}` : ""}` +
      `${info.encoder ? ` / ${info.encoder}` : ""}), ${info.classes.length} classes, input ${size}, ` +
      `post-processing: ${info.postprocessing.source}` + (info.classifier ? `; classifier ${info.classifier.model}` : "");
    classifierServed = Boolean(info.classifier);
    document.body.dataset.state = "ready";
  } catch (error) {
    setStatus(`cannot read /model/info: ${error.message}`, true);
  }
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) predict(event.target.files[0]);
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) predict(event.dataTransfer.files[0]);
  });
  describe();
}

wire();
