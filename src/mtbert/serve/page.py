"""The page at `/` of `mtbert serve`: try the model by hand. Its own HTML, CSS and script, nothing from outside the
machine; it reads /health (the model, its tasks, its dev metrics) and calls the same JSON routes as any client, so
the same limits and batching apply, and the server's error messages show in the page."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mtbert</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d232a; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
  .meta { color: #57606a; margin-bottom: 1.2rem; } .meta code { background: #f2f4f7; padding: 0 .25rem; }
  section { border: 1px solid #d8dee4; border-radius: 8px; padding: 1rem; margin-bottom: 1rem; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; margin-bottom: .4rem; }
  button { font: inherit; padding: .3rem 1rem; border-radius: 6px; border: 1px solid #1f6feb; background: #1f6feb;
           color: white; cursor: pointer; } button:disabled { opacity: .5; }
  .answer { margin-top: .7rem; } .label { font-weight: 600; }
  .bar { display: grid; grid-template-columns: 8.5rem 1fr 3.5rem; gap: .5rem; align-items: center; margin: .15rem 0; }
  .track { background: #eef1f4; border-radius: 4px; height: .9rem; }
  .fill { background: #1f6feb; border-radius: 4px; height: 100%; }
  .error { color: #b42318; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>mtbert</h1>
<div class="meta" id="meta">loading the model's description…</div>
<div id="tasks"></div>
<script>
"use strict";
const BUILTIN = {
  sst: {title: "Sentiment (SST-5)", route: "/sentiment", pair: false},
  para: {title: "Paraphrase (Quora)", route: "/paraphrase", pair: true},
  sts: {title: "Similarity (STS, 0 to 5)", route: "/similarity", pair: true},
};
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
function bar(name, value, scale, id) {
  const fill = el("div", {class: "fill"});
  fill.style.width = (100 * Math.max(0, Math.min(1, value / scale))).toFixed(1) + "%";
  return el("div", {class: "bar", "data-name": id || name},
            el("span", {}, name), el("div", {class: "track"}, fill), el("span", {}, value.toFixed(scale > 1 ? 2 : 3)));
}
function show(answer, result) {
  answer.replaceChildren();
  if ("probabilities" in result) {  // classes: the label, then a bar per class
    answer.append(el("div", {class: "label"}, result.name));
    const names = result.names || result.probabilities.map((_, k) => String(k));
    result.probabilities.forEach((p, k) => answer.append(bar(names[k], p, 1, "p" + k)));
  } else if ("probability" in result) {  // binary: the label and its probability
    answer.append(el("div", {class: "label"}, result.name || (result.label ? "paraphrase" : "not a paraphrase")));
    answer.append(bar("probability", result.probability, 1));
  } else if ("similarity" in result) {
    answer.append(el("div", {class: "label"}, result.similarity.toFixed(2) + " of 5"));
    answer.append(bar("similarity", result.similarity, 5));
  } else {
    answer.append(el("div", {class: "label"}, String(result.score)));
  }
}
const SST_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"];
function section(task, spec) {
  const inputs = spec.pair ? [el("textarea", {rows: 2, placeholder: "first text", name: "a"}),
                              el("textarea", {rows: 2, placeholder: "second text", name: "b"})]
                           : [el("textarea", {rows: 2, placeholder: "a text", name: "a"})];
  const button = el("button", {type: "button"}, "Predict");
  const answer = el("div", {class: "answer", "aria-live": "polite"});
  button.addEventListener("click", async () => {
    const texts = inputs.map(i => i.value);
    const body = spec.pair ? {pairs: [texts]} : {texts: texts};
    button.disabled = true;
    answer.replaceChildren("…");
    try {
      const response = await fetch(spec.route, {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify(body)});
      const found = await response.json();
      if (!response.ok) {
        const detail = Array.isArray(found.detail) ? found.detail.map(d => d.msg).join("; ") : found.detail;
        answer.replaceChildren(el("div", {class: "error"}, response.status + ": " + detail));
      } else {
        const result = found.results[0];
        if (task === "sst") result.names = SST_NAMES;
        if (spec.labels) result.names = spec.labels;
        show(answer, result);
      }
    } catch (e) {
      answer.replaceChildren(el("div", {class: "error"}, "no answer from the server: " + e));
    } finally {
      button.disabled = false;
    }
  });
  return el("section", {id: "task-" + task}, el("h2", {}, spec.title), ...inputs, button, answer);
}
async function start() {
  const health = await (await fetch("/health")).json();
  const metrics = Object.entries(health.dev_metrics || {}).filter(([k]) => k.includes("/") || k === "mean")
    .map(([k, v]) => k + " " + Number(v).toFixed(3)).join(", ");
  document.getElementById("meta").replaceChildren(
    "model ", el("code", {}, health.model), " · tasks: " + health.tasks.join(", "),
    metrics ? " · dev: " + metrics : "");
  const tasks = document.getElementById("tasks");
  for (const task of health.tasks) {
    const declared = (health.declared || {})[task];
    const spec = BUILTIN[task] ||
      {title: task, route: "/tasks/" + task, pair: declared.pair, labels: declared.labels};
    tasks.append(section(task, spec));
  }
}
start();
</script>
</body>
</html>
"""
