// The chat page of a-chat's WebSocket listener (ARCHITECTURE §14). One text frame carries
// one protocol line each way: the first is the login (`NAME` or `NAME PASSWORD`), then
// `names: text`. Everything received is inserted as text (textContent), never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const auth = document.body.dataset.auth === "on";
  const status = $("status");
  const messages = $("messages");
  let socket = null;
  let me = "";

  if (auth) {
    $("password-row").hidden = false;
    $("login-password").required = true;
  }

  function show(text, kind) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    const follow = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 4;
    messages.appendChild(item);
    if (follow) messages.scrollTop = messages.scrollHeight;
  }

  function kindOf(line) {
    if (line.startsWith("error: ")) return "error";
    if (line.startsWith("notice: ")) return "notice";
    return "from";
  }

  function setStatus(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    me = $("login-name").value.trim();
    const password = $("login-password").value;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/");
    setStatus("connecting…");
    socket.addEventListener("open", () => {
      socket.send(auth ? me + " " + password : me);
      $("login-password").value = "";
      $("login").hidden = true;
      $("chat").hidden = false;
      setStatus("connected as " + me, "live");
      $("line").focus();
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") show(event.data, kindOf(event.data));
    });
    socket.addEventListener("close", (event) => {
      const why = event.reason ? ": " + event.reason : "";
      setStatus("disconnected (" + event.code + why + ")", "closed");
      show("disconnected (" + event.code + why + ")", "notice");
      $("login").hidden = false;
      socket = null;
    });
  });

  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    const line = $("line").value;
    if (!socket || socket.readyState !== WebSocket.OPEN || line.trim() === "") return;
    socket.send(line);
    show("me → " + line, "mine");
    $("line").value = "";
  });
})();
