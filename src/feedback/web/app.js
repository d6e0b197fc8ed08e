// The annotation page. Model text is untrusted: it is only ever put on the page with
// textContent, never as HTML. The token lives in sessionStorage and goes out as a bearer header.
"use strict";

const FLAGS = [
  ["object", "object not in the image"],
  ["attribute", "wrong attribute"],
  ["count", "wrong count"],
  ["relation", "wrong relation / position"],
  ["text", "text not in the image"],
  ["guess", "guess about the unseen"],
];
const TOKEN_KEY = "factrl-token";
let current = null; // the item shown
let busy = false; // a request is in flight: keys and buttons wait for it

const $ = (id) => document.getElementById(id);

function status(text) {
  $("status").textContent = text;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    signOut("That token was not accepted.");
    throw new Error("unauthorized");
  }
  if (!res.ok) throw new Error(path + ": " + res.status + " " + (await res.text()));
  return res;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  current = null;
  $("work").hidden = true;
  $("done").hidden = true;
  $("signin").hidden = false;
  $("who").textContent = "";
  $("progress").textContent = "";
  $("signin-error").textContent = message || "";
}

function showProgress(p) {
  $("progress").textContent =
    `answered ${p.answered}, skipped ${p.skipped}, ${p.remaining} left of ${p.total}`;
}

function buildFlags() {
  for (const side of [1, 2]) {
    const box = $("flags-" + side);
    for (const [name, label] of FLAGS) {
      const l = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = name;
      input.id = `flag-${side}-${name}`;
      l.append(input, " " + label);
      box.append(l);
    }
  }
}

async function showImage(pair) {
  const res = await api("GET", `/api/image/${pair}`);
  const old = $("image").src;
  $("image").src = URL.createObjectURL(await res.blob());
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function render(item) {
  current = item;
  $("done").hidden = item !== null;
  $("work").hidden = item === null;
  if (item === null) return;
  const turns = $("turns");
  turns.replaceChildren();
  for (const t of item.turns) {
    const p = document.createElement("p");
    p.className = t.from;
    p.textContent = (t.from === "human" ? "User: " : "Assistant: ") + t.value.replace("<image>\n", "");
    turns.append(p);
  }
  $("text-1").textContent = item.responses[0];
  $("text-2").textContent = item.responses[1];
  const a = item.answer;
  for (const side of [1, 2]) {
    const flags = a ? a["flags_" + side] : [];
    for (const [name] of FLAGS) $(`flag-${side}-${name}`).checked = flags.includes(name);
  }
  for (const v of ["0", "1", "2"]) $("q1-" + v).checked = a !== null && String(a.q1) === v;
  for (const v of ["1", "2"]) $("q2-" + v).checked = a !== null && String(a.q2) === v;
  syncQ2();
  showImage(item.pair).catch((e) => status(e.message));
}

function syncQ2() {
  const tie = $("q1-0").checked;
  $("q2").disabled = !tie;
  if (!tie) for (const v of ["1", "2"]) $("q2-" + v).checked = false;
}

async function run(action) {
  if (busy) return;
  busy = true;
  try {
    await action();
  } catch (e) {
    if (e.message !== "unauthorized") status(e.message);
  } finally {
    busy = false;
  }
}

async function loadNext() {
  const next = await (await api("GET", "/api/next")).json();
  showProgress(next.progress);
  render(next.item);
}

function chosen(name) {
  const c = document.querySelector(`input[name="${name}"]:checked`);
  return c ? Number(c.value) : null;
}

function submit() {
  return run(async () => {
    if (current === null) return;
    const q1 = chosen("q1");
    const q2 = q1 === 0 ? chosen("q2") : null;
    if (q1 === null) return status("Answer Q1 first.");
    if (q1 === 0 && q2 === null) return status("Q1 is a tie: answer Q2.");
    const flags = (side) => FLAGS.map(([n]) => n).filter((n) => $(`flag-${side}-${n}`).checked);
    const body = { pair: current.pair, q1, q2, flags_1: flags(1), flags_2: flags(2) };
    // The page moves on only once the server has stored the answer.
    showProgress(await (await api("POST", "/api/answer", body)).json());
    status(`Saved pair ${body.pair}.`);
    await loadNext();
  });
}

function skip() {
  return run(async () => {
    if (current === null) return;
    const pair = current.pair;
    showProgress(await (await api("POST", "/api/skip", { pair })).json());
    status(`Skipped pair ${pair}.`);
    await loadNext();
  });
}

function undo() {
  return run(async () => {
    const undone = await (await api("POST", "/api/undo")).json();
    showProgress(undone.progress);
    if (undone.pair === null) return status("Nothing to undo.");
    status(`Undid your answer on pair ${undone.pair}.`);
    render(await (await api("GET", `/api/item/${undone.pair}`)).json());
  });
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const me = await (await api("GET", "/api/me")).json();
  $("signin").hidden = true;
  $("signin-error").textContent = "";
  $("who").textContent = "Signed in as " + me.name;
  await loadNext();
}

function onKey(e) {
  if (e.target instanceof HTMLInputElement && e.target.type === "password") return;
  if ($("signin").hidden === false || e.ctrlKey || e.metaKey || e.altKey) return;
  const radio = { "1": "q1-1", "2": "q1-2", "3": "q1-0", "4": "q2-1", "5": "q2-2" }[e.key];
  if (radio && current !== null) {
    if (!$(radio).closest("fieldset").disabled) $(radio).checked = true;
    syncQ2();
  } else if (e.key === "Enter") {
    e.preventDefault();
    submit();
  } else if (e.key === "k") {
    skip();
  } else if (e.key === "u") {
    undo();
  } else {
    return;
  }
  e.preventDefault();
}

document.addEventListener("DOMContentLoaded", () => {
  buildFlags();
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => signIn($("token").value.trim()));
  });
  $("answer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("q1").addEventListener("change", syncQ2);
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("undo-done").addEventListener("click", undo);
  document.addEventListener("keydown", onKey);
  if (sessionStorage.getItem(TOKEN_KEY)) run(() => signIn(sessionStorage.getItem(TOKEN_KEY)));
});
