// Shared by both status pages: the admin token (kept in sessionStorage, sent as
// "Authorization: Bearer"), JSON fetches, element building and the refresh loop.
"use strict";

const Status = (() => {
  const KEY = "admin-token";

  function token() { return sessionStorage.getItem(KEY) || ""; }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v;   // CSSOM: allowed by the CSP, unlike the attribute
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Patch `old` to look like `fresh`, keeping every node whose place and shape did not change, so
  // a refresh does not replace the button under the user's pointer (nor the tests' element).
  // A changed button is replaced (its click handler may differ); listeners are not compared.
  function morph(old, fresh) {
    if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) return fresh;
    if (old.nodeType === Node.TEXT_NODE) {
      if (old.data !== fresh.data) old.data = fresh.data;
      return old;
    }
    if (old.isEqualNode(fresh)) return old;
    if (old.nodeName === "BUTTON" || old.childNodes.length !== fresh.childNodes.length) return fresh;
    for (const a of [...old.attributes]) if (!fresh.hasAttribute(a.name)) old.removeAttribute(a.name);
    for (const a of [...fresh.attributes]) {
      if (old.getAttribute(a.name) === a.value) continue;
      if (a.name === "style") old.style.cssText = fresh.style.cssText;   // CSSOM: allowed by the CSP
      else old.setAttribute(a.name, a.value);
    }
    render(old, [...fresh.childNodes]);
    return old;
  }

  function render(parent, children) {
    if (parent.childNodes.length !== children.length) {
      parent.replaceChildren(...children);
      return;
    }
    children.forEach((child, i) => {
      const current = parent.childNodes[i];
      const kept = morph(current, child);
      if (kept !== current) parent.replaceChild(kept, current);
    });
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  function message(text, kind) {
    const m = document.getElementById("msg");
    if (!m) return;
    m.textContent = text;
    m.className = "msg " + (kind || "");
  }

  // A mutating call: needs the token; 401/403 forget it and say so.
  async function post(path, body) {
    if (!token()) {
      message("Enter the admin token first (top right), then try again.", "error");
      const input = document.getElementById("token");
      if (input) input.focus();
      return null;
    }
    const r = await fetch(path, {
      method: "POST",
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 || r.status === 403) {
      sessionStorage.removeItem(KEY);
      renderToken();
      message((data && data.error) || `refused (HTTP ${r.status})`, "error");
      return null;
    }
    if (!r.ok) {
      message((data && data.error) || `HTTP ${r.status}`, "error");
      return null;
    }
    return data;
  }

  function renderToken() {
    const box = document.getElementById("token-box");
    if (!box) return;
    box.replaceChildren();
    if (token()) {
      box.append(el("span", { class: "meta", id: "token-state", text: "token set" }), " ",
        el("button", { id: "token-forget", type: "button", onclick: () => {
          sessionStorage.removeItem(KEY); renderToken(); } }, "Forget token"));
    } else {
      const input = el("input", { id: "token", type: "password", placeholder: "admin token",
                                  autocomplete: "off", "aria-label": "admin token" });
      const save = () => {
        if (input.value.trim()) { sessionStorage.setItem(KEY, input.value.trim()); renderToken();
                                  message("Token kept for this tab.", "ok"); }
      };
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") save(); });
      box.append(input, " ", el("button", { id: "token-save", type: "button", onclick: save }, "Use token"));
    }
  }

  // Calls refresh() now and every `seconds`; a failure is shown, the loop goes on.
  function every(seconds, refresh) {
    let running = false;
    const tick = async () => {
      if (running) return;
      running = true;
      try {
        await refresh();
        const u = document.getElementById("updated");
        if (u) u.textContent = "updated " + new Date().toLocaleTimeString();
      } catch (e) {
        message("refresh failed: " + e.message, "error");
      } finally { running = false; }
    };
    tick();
    return setInterval(tick, seconds * 1000);
  }

  function fmt(n, digits) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  document.addEventListener("DOMContentLoaded", renderToken);
  return { el, svg, render, getJSON, post, message, every, fmt, token, renderToken };
})();
