// Passkeys on keystile's pages: buttons marked data-passkey="register" | "login" |
// "second-factor" | "reauth" call navigator.credentials and the JSON API (same origin, cookie).
// Served from /static under the pages' CSP (script-src 'self'): no inline script.
"use strict";
(function () {
  function decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }

  function encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function asJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = encode(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    }
    if (r.authenticatorData) {
      response.authenticatorData = encode(r.authenticatorData);
      response.signature = encode(r.signature);
      if (r.userHandle) response.userHandle = encode(r.userHandle);
    }
    const out = {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
    if (credential.authenticatorAttachment) out.authenticatorAttachment = credential.authenticatorAttachment;
    return out;
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = data.error && data.error.message ? data.error.message : "That did not work.";
      throw new Error(message);
    }
    return data;
  }

  function say(button, text) {
    const status = document.getElementById(button.dataset.status || "passkey-status");
    if (status) { status.textContent = text; status.hidden = false; }
  }

  async function register(button) {
    const options = await post("/v1/me/passkeys/options", {});
    options.challenge = decode(options.challenge);
    options.user.id = decode(options.user.id);
    (options.excludeCredentials || []).forEach((c) => { c.id = decode(c.id); });
    const credential = await navigator.credentials.create({ publicKey: options });
    const nameInput = document.getElementById("passkey-name");
    const name = nameInput && nameInput.value.trim() ? nameInput.value.trim() : null;
    const created = await post("/v1/me/passkeys", { credential: asJSON(credential), name: name });
    if (created.recovery_codes && created.recovery_codes.length) {
      const list = document.getElementById("passkey-recovery-codes");
      created.recovery_codes.forEach((code) => {
        const item = document.createElement("li");
        const text = document.createElement("code");
        text.textContent = code;
        item.appendChild(text);
        list.appendChild(item);
      });
      list.hidden = false;
      say(button, "Your passkey is added. Keep these recovery codes somewhere safe: they are shown only now.");
      return;
    }
    window.location.assign("/account?notice=passkey-added");
  }

  async function signIn(button, mfaToken) {
    const body = { mode: "session" };
    if (mfaToken) body.mfa_token = mfaToken;
    const options = await post("/v1/passkeys/login/options", body);
    options.challenge = decode(options.challenge);
    (options.allowCredentials || []).forEach((c) => { c.id = decode(c.id); });
    const credential = await navigator.credentials.get({ publicKey: options });
    await post("/v1/passkeys/login", Object.assign(body, { credential: asJSON(credential) }));
    window.location.assign(button.dataset.next || "/account");
  }

  // Step-up: one of my own passkeys refreshes this session in place (/reauth).
  async function reauthenticate(button) {
    const options = await post("/v1/me/reauthenticate/passkey/options", {});
    options.challenge = decode(options.challenge);
    (options.allowCredentials || []).forEach((c) => { c.id = decode(c.id); });
    const credential = await navigator.credentials.get({ publicKey: options });
    await post("/v1/me/reauthenticate/passkey", { credential: asJSON(credential) });
    window.location.assign(button.dataset.next || "/account");
  }

  document.querySelectorAll("button[data-passkey]").forEach((button) => {
    if (!window.PublicKeyCredential) { button.hidden = true; return; }
    button.hidden = false;
    button.addEventListener("click", async () => {
      button.disabled = true;
      say(button, "Waiting for your passkey…");
      try {
        const kind = button.dataset.passkey;
        if (kind === "register") await register(button);
        else if (kind === "reauth") await reauthenticate(button);
        else await signIn(button, kind === "second-factor" ? button.dataset.mfaToken : null);
      } catch (error) {
        say(button, error && error.name === "NotAllowedError"
          ? "The passkey request was cancelled or timed out."
          : (error && error.message) || "That did not work.");
      } finally {
        button.disabled = false;
      }
    });
  });
})();
