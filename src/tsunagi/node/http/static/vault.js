// The vault's document page, and the holder's side of the vault in the browser. The holder's
// device file is imported once and kept by this browser (localStorage). A step unlocks the
// holder's keys here: a channel session signed by the device key sends the PIN to the
// service, whose answer K opens the device file's sealed keys in this page. The holder then
// signs the step's call record (BIP340, vault_bip340.js), and an approval opens the holder's
// HPKE-sealed fragment here and releases it over an identity-key session. The node sees the
// PIN (the service must, to count it) and the released fragment, never the holder's keys.
// Every POST sends the session's CSRF token.
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

  async function hpkeOpen(sealed, privateKey, publicRaw, info, aad) {
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
    return new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad || EMPTY }, aes, sealed.slice(32)));
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

  // --- the node's routes ------------------------------------------------------------------

  class Refused extends Error {}

  async function post(path, body) {
    let answer;
    try {
      const response = await fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
      answer = await response.json();
    } catch (error) {
      throw new Refused(`the node did not answer (${error.message}): try again`);
    }
    if (!answer.ok) {
      throw new Refused(answer.message);
    }
    return answer;
  }

  // --- the channel to the confidentiality service (tsunagi/privacy/channel.py) ----------

  const CHANNEL_DOMAIN = utf8.encode("tsunagi/channel/1");

  async function sha256(data) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  }

  async function x25519(privateKey, publicRaw) {
    const peer = await crypto.subtle.importKey("raw", publicRaw, { name: "X25519" }, false, []);
    return new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: peer },
                                                         privateKey, 256));
  }

  // A session signed by `secret` (a BIP340 key: the device key, or the holder's identity
  // key) with the service whose signing key the device file pins.
  async function channel(secret, serviceKey) {
    const ephemeral = await crypto.subtle.generateKey({ name: "X25519" }, false,
                                                      ["deriveBits"]);
    const hello = concat([1], new Uint8Array(await crypto.subtle.exportKey(
      "raw", ephemeral.publicKey)));
    const opened = await post("/vault/api/channel/open", { hello: toHex(hello) });
    const reply = fromHex(opened.reply);
    const identity = reply.slice(0, 128);
    if (toHex(identity.slice(0, 32)) !== toHex(serviceKey)) {
      throw new Refused("the service answered with another key than your device file " +
                        "trusts: this is not your vault's service");
    }
    const statement = await sha256(concat(utf8.encode("tsunagi/service-identity/1"),
                                          identity.slice(0, 64)));
    if (!await window.tsunagiBip340.verify(identity.slice(0, 32), statement,
                                           identity.slice(64, 128))) {
      throw new Refused("the service's identity is not signed by its own key");
    }
    const clientKey = window.tsunagiBip340.publicKey(secret);
    const transcript = await sha256(concat(CHANNEL_DOMAIN, hello, reply, clientKey));
    const shared = concat(await x25519(ephemeral.privateKey, reply.slice(128, 160)),
                          await x25519(ephemeral.privateKey, identity.slice(32, 64)));
    const hkdf = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
    const okm = new Uint8Array(await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: transcript,
        info: concat(CHANNEL_DOMAIN, utf8.encode(" keys")) }, hkdf, 512));
    const auth = concat(clientKey, await window.tsunagiBip340.sign(secret, transcript));
    await post("/vault/api/channel/authenticate", { session: opened.session,
                                                    auth: toHex(auth) });
    const keyOf = (raw, use) => crypto.subtle.importKey("raw", raw, "AES-GCM", false, [use]);
    const sendKey = await keyOf(okm.slice(0, 32), "encrypt");
    const receiveKey = await keyOf(okm.slice(32, 64), "decrypt");
    let sent = 0;
    let received = 0;
    const sequence = (number) => {
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(number));
      return bytes;
    };
    async function request(message) {
      const number = sequence(sent);
      sent += 1;
      const sealed = new Uint8Array(await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: concat(new Uint8Array(4), number),
          additionalData: concat(transcript, [1], number) },
        sendKey, utf8.encode(JSON.stringify(message))));
      const answer = await post("/vault/api/channel/exchange", {
        session: opened.session, frame: toHex(concat(number, sealed)) });
      const frame = fromHex(answer.frame);
      const expected = sequence(received);
      if (toHex(frame.slice(0, 8)) !== toHex(expected)) {
        throw new Refused("the service's answer is out of order: try again");
      }
      received += 1;
      const payload = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: concat(new Uint8Array(4), expected),
          additionalData: concat(transcript, [2], expected) }, receiveKey, frame.slice(8));
      const parsed = JSON.parse(new TextDecoder().decode(payload));
      if (!parsed.ok) {
        let text = parsed.message;
        if (parsed.tries_left !== undefined) {
          text += ` (${parsed.tries_left} tries left before you are locked out)`;
        }
        throw new Refused(text);
      }
      return parsed;
    }
    return { request, transcript };
  }

  // --- the holder's keys, unlocked with the PIN -----------------------------------------

  // What the device file's AES-GCM binds: its clear fields as Python's json.dumps writes
  // them with sorted keys and no spaces (tsunagi/privacy/holders.py DeviceFile).
  function deviceAssociatedData(file) {
    return utf8.encode(JSON.stringify({
      cipher: "aes-256-gcm", device_key: file.device_key, format: file.format,
      identity: file.identity, service_key: file.service_key, version: file.version }));
  }

  async function unlock(pin, requestId) {
    const text = device();
    if (!text) {
      throw new Refused("import your device file first (Your device, above)");
    }
    const file = JSON.parse(text);
    const session = await channel(fromHex(file.device_key), fromHex(file.service_key));
    const message = { type: "unlock", pin };
    if (requestId) {
      message.request_id = requestId;
    }
    const answer = await session.request(message);
    const wrapping = await crypto.subtle.importKey("raw", fromHex(answer.key), "AES-GCM",
                                                   false, ["decrypt"]);
    let secret;
    try {
      secret = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: fromHex(file.nonce), additionalData: deviceAssociatedData(file) },
        wrapping, fromHex(file.ciphertext)));
    } catch (error) {
      throw new Refused("your device file does not open with the key the service gave: it " +
                        "was edited, or is older than your last PIN change");
    }
    const identity = fromHex(file.identity);
    return { signing: secret.slice(0, 32), fragment: secret.slice(32, 64),
             signingKey: identity.slice(0, 32), fragmentKey: identity.slice(32, 64),
             serviceKey: fromHex(file.service_key) };
  }

  // A step on the chain: the node prepares the call record, the holder signs its txid.
  async function call(holder, method, args) {
    const prepared = await post("/vault/api/calls/prepare", {
      key: toHex(holder.signingKey), method, args });
    const signature = await window.tsunagiBip340.sign(holder.signing, fromHex(prepared.txid));
    const answer = await post("/vault/api/calls/submit", { record: prepared.record,
                                                          signature: toHex(signature) });
    if (!answer.stands) {
      throw new Refused(`${method} was refused (${answer.refusal}): ` +
                        `${answer.message || answer.code}; the refusal is on the chain`);
    }
    return answer;
  }

  function base64url(bytes) {
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
      .replace(/=+$/, "");
  }

  function holderIndex(holder) {
    const key = toHex(holder.signingKey);
    const entry = document.getElementById("vault-device").dataset.holders.split(" ")
      .map((item) => item.split(":")).find((item) => item[2] === key);
    if (!entry) {
      throw new Refused("you are not one of this document's holders: only they hold its " +
                        "fragments");
    }
    return Number(entry[0]);
  }

  function u32le(value) {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, value, true);
    return bytes;
  }

  // Opens this holder's sealed fragment of the part and releases it to the service over an
  // identity-key session, signed for that session and request (tsunagi/fragment-release/1).
  async function release(holder, requestId, partId) {
    const index = holderIndex(holder);
    const chainId = Number(requests.dataset.chainId);
    const context = concat(u32le(chainId), fromHex(documentId), u32le(partId), [index]);
    const found = await fetch(
      `/vault/api/documents/${documentId}/parts/${partId}/fragments/${index}`);
    const sealed = await found.json();
    if (!sealed.ok) {
      throw new Refused(sealed.message);
    }
    const key = await crypto.subtle.importKey(
      "jwk", { kty: "OKP", crv: "X25519", d: base64url(holder.fragment),
               x: base64url(holder.fragmentKey) }, { name: "X25519" }, false, ["deriveBits"]);
    const info = concat(utf8.encode("tsunagi/fragment/1"), context, holder.signingKey);
    const fragment = await hpkeOpen(fromHex(sealed.sealed), key, holder.fragmentKey, info);
    const session = await channel(holder.signing, holder.serviceKey);
    const statement = await sha256(concat(utf8.encode("tsunagi/fragment-release/1"),
                                          session.transcript, fromHex(requestId), context,
                                          await sha256(fragment)));
    await session.request({
      type: "release", request_id: requestId, chain_id: chainId, document_id: documentId,
      part_id: partId, holder_index: index, fragment: toHex(fragment),
      signature: toHex(await window.tsunagiBip340.sign(holder.signing, statement)) });
    await post("/vault/api/requests/open-part", { request_id: requestId });
  }

  // --- the forms ------------------------------------------------------------------------

  async function guarded(work, done) {
    say("Working…", false);
    let outcome = [done, false];
    try {
      await work();
    } catch (error) {
      outcome = [`Refused: ${error instanceof Refused ? error.message : error}`, true];
    }
    await refresh();
    say(...outcome);
  }

  for (const form of document.querySelectorAll("form.request-form")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const pin = form.elements.pin.value;
      form.elements.pin.value = "";
      guarded(async () => {
        const holder = await unlock(pin, null);
        const reply = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
        const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", reply.publicKey));
        const expiry = form.elements.expiry_s.value;
        const answer = await call(holder, "request_open", {
          document_id: documentId, part_id: Number(form.dataset.part),
          reason: form.elements.reason.value, reply_key: toHex(publicRaw),
          expiry_s: expiry ? Number(expiry) : 0 });
        const jwk = await crypto.subtle.exportKey("jwk", reply.privateKey);
        localStorage.setItem(REPLY_STORE + answer.txid,
                             JSON.stringify({ jwk, public: toHex(publicRaw) }));
        form.reset();
      }, "Requested: the other holders see it now.");
    });
  }

  const DONE = { approve: "Approved: your fragment was released for this request.",
                 deny: "Denied: the request is closed and released nothing.",
                 revoke: "Your approval was taken back." };

  function bindHolderForms() {
    for (const form of requests.querySelectorAll("form.holder-form")) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const action = event.submitter ? event.submitter.value : "approve";
        const requestId = form.dataset.request;
        const pin = form.elements.pin.value;
        const reason = form.elements.reason.value;
        form.elements.pin.value = "";
        guarded(async () => {
          const holder = await unlock(pin, requestId);
          const args = { request_id: requestId };
          if (action === "deny") {
            args.reason = reason;
          }
          await call(holder, action, args);
          if (action === "approve") {
            await release(holder, requestId, Number(form.dataset.part));
          }
        }, DONE[action]);
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
      // What a holder is typing survives the update (a PIN stays only in the form).
      const typed = new Map(Array.from(requests.querySelectorAll("form.holder-form"), (form) => [
        form.dataset.request, [form.elements.pin.value, form.elements.reason.value]]));
      requests.innerHTML = await response.text();
      for (const form of requests.querySelectorAll("form.holder-form")) {
        const values = typed.get(form.dataset.request);
        if (values) {
          [form.elements.pin.value, form.elements.reason.value] = values;
        }
      }
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
