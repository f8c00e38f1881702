// The vault's document page. The holder's device file is imported once and kept by this
// browser (localStorage). Steps that change state go to the node's development path with the
// device file and PIN (see docs/drafts/vaultpages.md); each sends the session's CSRF token.
// A request's reply key is an X25519 key made here with WebCrypto; its private half never
// leaves this browser, and the opened part, HPKE-sealed to it by the service, is opened here
// (RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM). The requests
// part of the page is fetched again at every `changed` event of /vault/events. Text goes in
// with textContent; only the node's own rendered fragment goes in as HTML.
"use strict";

(function () {
  const DEVICE_STORE = "tsunagi-vault-device";
  const REPLY_STORE = "tsunagi-vault-reply:";  // + request id: the reply key's private JWK
  const DELIVERY_DOMAIN = "tsunagi/vault-delivery/1";
  const utf8 = new TextEncoder();
  const requests = document.getElementById("vault-requests");
  if (!requests) {
    return;
  }
  const documentId = requests.dataset.document;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const message = document.getElementById("vault-message");
  const opened = new Map();  // request id -> the opened part's text, kept across re-renders

  function say(text, refused) {
    message.textContent = text;
    message.dataset.state = refused ? "refused" : "ok";
  }

  // --- bytes ------------------------------------------------------------------------------

  function fromHex(text) {
    const bytes = new Uint8Array(text.length / 2);
    for (let i = 0; i < bytes.length; i += 1) {
      bytes[i] = parseInt(text.substr(2 * i, 2), 16);
    }
    return bytes;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(...parts) {
    const size = parts.reduce((sum, part) => sum + part.length, 0);
    const joined = new Uint8Array(size);
    let at = 0;
    for (const part of parts) {
      joined.set(part, at);
      at += part.length;
    }
    return joined;
  }

  // --- HPKE base mode, receiver side (RFC 9180 sections 4, 5.1, 7.1) ---------------------

  const EMPTY = new Uint8Array(0);
  const KEM_SUITE = concat(utf8.encode("KEM"), [0x00, 0x20]);
  const HPKE_SUITE = concat(utf8.encode("HPKE"), [0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);

  async function hmac(key, data) {
    // An empty HMAC key equals 32 zero bytes (both are padded to the block with zeros), and
    // WebCrypto takes no empty key: HKDF-Extract with no salt is HMAC under HashLen zeros.
    const raw = key.length ? key : new Uint8Array(32);
    const imported = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" },
                                                   false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", imported, data));
  }

  function labeledExtract(salt, label, ikm, suite) {
    return hmac(salt, concat(utf8.encode("HPKE-v1"), suite, utf8.encode(label), ikm));
  }

  async function labeledExpand(prk, label, info, length, suite) {
    const labeled = concat([length >> 8, length & 0xff], utf8.encode("HPKE-v1"), suite,
                           utf8.encode(label), info);
    return (await hmac(prk, concat(labeled, [1]))).slice(0, length);  // one block: <= 32
  }

  async function hpkeOpen(sealed, privateKey, publicRaw, info) {
    const encapsulated = sealed.slice(0, 32);
    const ephemeral = await crypto.subtle.importKey("raw", encapsulated, { name: "X25519" },
                                                    false, []);
    const dh = new Uint8Array(await crypto.subtle.deriveBits(
      { name: "X25519", public: ephemeral }, privateKey, 256));
    const eae = await labeledExtract(EMPTY, "eae_prk", dh, KEM_SUITE);
    const shared = await labeledExpand(eae, "shared_secret", concat(encapsulated, publicRaw),
                                       32, KEM_SUITE);
    const context = concat([0x00], await labeledExtract(EMPTY, "psk_id_hash", EMPTY, HPKE_SUITE),
                           await labeledExtract(EMPTY, "info_hash", info, HPKE_SUITE));
    const secret = await labeledExtract(shared, "secret", EMPTY, HPKE_SUITE);
    const key = await labeledExpand(secret, "key", context, 16, HPKE_SUITE);
    const nonce = await labeledExpand(secret, "base_nonce", context, 12, HPKE_SUITE);
    const aes = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, aes,
                                                      sealed.slice(32)));
  }
  window.tsunagiHpkeOpen = hpkeOpen;  // for the browser test's known-answer check

  // --- the device file ----------------------------------------------------------------------

  function device() {
    return localStorage.getItem(DEVICE_STORE);
  }

  function showDevice() {
    const status = document.getElementById("device-status");
    const form = document.getElementById("device-import");
    const forget = document.getElementById("device-forget");
    const text = device();
    form.hidden = Boolean(text);
    forget.hidden = !text;
    if (!text) {
      status.textContent = "No device file in this browser yet: import yours to take part.";
      return;
    }
    const key = JSON.parse(text).identity.slice(0, 64);
    const holders = document.getElementById("vault-device").dataset.holders.split(" ");
    const mine = holders.map((entry) => entry.split(":")).find((entry) => entry[2] === key);
    status.textContent = mine
      ? `This browser holds the device of holder ${mine[0]} (account #${mine[1]}).`
      : `This browser holds the device of key ${key.slice(0, 16)}..., not a holder of this ` +
        "document.";
  }

  document.getElementById("device-import").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = document.getElementById("device-file").value.trim();
    try {
      const parsed = JSON.parse(text);
      if (parsed.format !== "tsunagi-holder-device" || typeof parsed.identity !== "string") {
        throw new Error("not a device file");
      }
    } catch (error) {
      say("That is not a tsunagi-holder-device file: paste the whole JSON file you were " +
          "given at enrolment.", true);
      return;
    }
    localStorage.setItem(DEVICE_STORE, text);
    document.getElementById("device-file").value = "";
    say("Device file imported: this browser keeps it.", false);
    showDevice();
  });

  document.getElementById("device-forget").addEventListener("click", () => {
    localStorage.removeItem(DEVICE_STORE);
    showDevice();
  });

  // --- steps (the development path) ------------------------------------------------------

  async function step(path, body) {
    const text = device();
    if (!text) {
      say("Import your device file first (Your device, above).", true);
      return null;
    }
    let answer;
    try {
      const response = await fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ ...body, device: text }),
      });
      answer = await response.json();
    } catch (error) {
      say(`The node did not answer (${error.message}): try again.`, true);
      return null;
    }
    if (!answer.ok) {
      let text = answer.message;
      if (answer.tries_left !== undefined) {
        text += ` (${answer.tries_left} tries left before you are locked out)`;
      }
      say(`Refused: ${text}`, true);
      return null;
    }
    return answer;
  }

  for (const form of document.querySelectorAll("form.request-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const reply = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
      const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", reply.publicKey));
      const expiry = form.elements.expiry_s.value;
      const answer = await step(`/vault/api/dev/documents/${documentId}/requests`, {
        part: Number(form.dataset.part), reason: form.elements.reason.value,
        expiry_s: expiry ? Number(expiry) : 0, pin: form.elements.pin.value,
        reply_key: toHex(publicRaw),
      });
      form.elements.pin.value = "";
      if (answer) {
        const jwk = await crypto.subtle.exportKey("jwk", reply.privateKey);
        localStorage.setItem(REPLY_STORE + answer.request_id,
                             JSON.stringify({ jwk, public: toHex(publicRaw) }));
        say("Requested: the other holders see it now.", false);
        await refresh();
      }
    });
  }

  const DONE = { approve: "Approved: your fragment was released for this request.",
                 deny: "Denied: the request is closed and released nothing.",
                 revoke: "Your approval was taken back." };

  function bindHolderForms() {
    for (const form of requests.querySelectorAll("form.holder-form")) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const action = event.submitter ? event.submitter.value : "approve";
        const answer = await step(`/vault/api/dev/requests/${form.dataset.request}/${action}`,
                                  { pin: form.elements.pin.value,
                                    reason: form.elements.reason.value });
        form.elements.pin.value = "";
        if (answer) {
          say(DONE[action], false);
          await refresh();
        }
      });
    }
  }

  // --- the opened part, for the requester ------------------------------------------------

  async function openDelivery(article) {
    const id = article.dataset.request;
    const shown = article.querySelector(".opened-part");
    if (opened.has(id)) {
      shown.textContent = opened.get(id);
      shown.hidden = false;
      return;
    }
    const stored = localStorage.getItem(REPLY_STORE + id);
    if (!stored || article.dataset.delivered !== "true") {
      return;
    }
    const reply = JSON.parse(stored);
    const response = await fetch(`/vault/api/requests/${id}/delivery`);
    const answer = await response.json();
    if (!answer.ok) {
      return;
    }
    const key = await crypto.subtle.importKey("jwk", reply.jwk, { name: "X25519" }, false,
                                              ["deriveBits"]);
    const info = concat(utf8.encode(DELIVERY_DOMAIN), fromHex(id));
    try {
      const part = await hpkeOpen(fromHex(answer.sealed), key, fromHex(reply.public), info);
      opened.set(id, new TextDecoder().decode(part));
      shown.textContent = opened.get(id);
      shown.hidden = false;
    } catch (error) {
      say("The opened part does not open with this browser's reply key.", true);
    }
  }

  // --- live updates -----------------------------------------------------------------------

  let timer = null;

  function afterRender() {
    bindHolderForms();
    requests.querySelectorAll("article.request").forEach(openDelivery);
    // An open request expires by the clock: fetch the requests again just after that.
    const now = Date.now();
    const next = Array.from(requests.querySelectorAll('article.request[data-status="open"]'),
                            (article) => (Number(article.dataset.expiresS) + 1) * 1000 + 300)
      .filter((at) => at > now).sort((a, b) => a - b)[0];
    clearTimeout(timer);
    if (next !== undefined) {
      timer = setTimeout(refresh, next - now);
    }
  }

  async function refresh() {
    const response = await fetch(`/vault/documents/${documentId}/requests`);
    if (response.ok) {
      requests.innerHTML = await response.text();
      afterRender();
    }
  }

  const status = document.getElementById("live-status");
  if (window.EventSource) {
    const events = new EventSource("/vault/events");
    events.addEventListener("open", () => {
      status.textContent = "live";
      status.dataset.state = "live";
    });
    events.addEventListener("error", () => {
      status.textContent = "reconnecting";
      status.dataset.state = "waiting";
    });
    events.addEventListener("changed", refresh);
  }
  showDevice();
  afterRender();
}());
