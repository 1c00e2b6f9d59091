// Matrixon's wallet sign-in page. It finds the browser's wallets (EIP-6963, else
// window.ethereum), has one sign a Sign-In with Ethereum message that the server builds
// from its own parameters, and hands the signature back. Three modes, read from the URL:
//   /login/sso/redirect[/ethereum]?redirectUrl=…  log in, then return to the client
//   /auth/<stage>/fallback/web?session=…          complete one step of user-interactive auth
//   /oauth2/wallet?request=…&csrf=…               sign in on the OAuth authorize page (or,
//                                                 from the account page, link one more wallet)
//   …/io.matrixon/gate/page/<room id or alias>    a room's gate: its rule in words, a wallet's
//                                                 check, and joining with that wallet
// Nothing the page shows is inserted as HTML: every string goes through textContent.
"use strict";

const API = "/_matrix/client/unstable/io.matrixon";
const NO_WALLET =
  "No Ethereum wallet was found in this browser. Install a wallet extension, or open this " +
  "page in your wallet app's built-in browser, then reload the page.";
const SEARCHING = "Looking for wallets…";
const CHAIN_NAMES = {
  1: "Ethereum",
  10: "OP Mainnet",
  137: "Polygon",
  8453: "Base",
  42161: "Arbitrum One",
  11155111: "Sepolia",
};

const query = new URLSearchParams(window.location.search);
const fallback = window.location.pathname.match(/\/auth\/([^/]+)\/fallback\/web$/);
const gatePage = window.location.pathname.match(/\/io\.matrixon\/gate\/page\/([^/]+)$/);
const mode = fallback
  ? { kind: "auth", stage: decodeURIComponent(fallback[1]), session: query.get("session") }
  : gatePage
    ? { kind: "gate", room: decodeURIComponent(gatePage[1]) }
    : window.location.pathname === "/oauth2/wallet"
      ? { kind: "oauth", request: query.get("request") || "", csrf: query.get("csrf") || "" }
      : { kind: "login", redirectUrl: query.get("redirectUrl") };

const wallets = new Map();
let searching = true;
let busy = false;

/** A failure the page explains in its own words. */
class Problem extends Error {}

/** The server said no: its Matrix error. */
class Refused extends Error {
  constructor(status, errcode, message) {
    super(message);
    this.status = status;
    this.errcode = errcode;
  }
}

const $ = (id) => document.getElementById(id);

function show(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = kind || "";
}

function render() {
  const list = $("wallets");
  list.replaceChildren();
  for (const [id, wallet] of wallets) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.wallet = id;
    button.disabled = busy;
    const icon = wallet.info.icon;
    if (typeof icon === "string" && icon.startsWith("data:image/")) {
      const img = document.createElement("img");
      img.src = icon;
      img.alt = "";
      img.width = 28;
      img.height = 28;
      button.append(img);
    }
    const name = document.createElement("span");
    name.textContent = wallet.info.name || "Wallet";
    button.append(name);
    button.addEventListener("click", () =>
      mode.kind === "gate" ? checkWallet(wallet) : signIn(wallet),
    );
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
  const status = $("status").textContent;
  if (wallets.size === 0 && !searching) {
    show(NO_WALLET, "error");
  } else if (wallets.size > 0 && (status === NO_WALLET || status === SEARCHING)) {
    show("", "");
  }
}

// EIP-6963: wallets announce themselves, now or whenever they load later.
window.addEventListener("eip6963:announceProvider", (event) => {
  const detail = event.detail;
  if (!detail || !detail.info || !detail.provider || typeof detail.provider.request !== "function") {
    return;
  }
  wallets.delete("injected"); // the legacy global is usually one of the announced wallets
  wallets.set(detail.info.uuid || detail.info.name, detail);
  render();
});
window.dispatchEvent(new Event("eip6963:requestProvider"));
window.setTimeout(() => {
  searching = false;
  const legacy = window.ethereum;
  if (wallets.size === 0 && legacy && typeof legacy.request === "function") {
    wallets.set("injected", { info: { name: "Browser wallet" }, provider: legacy });
  }
  render();
}, 500);

show(SEARCHING, "info");
document.querySelector("main").dataset.ready = "true"; // wallets may announce from now on

if (mode.kind === "auth") {
  document.title = "Confirm it's you";
  $("title").textContent = "Confirm it's you";
  $("intro").textContent = "Checking what you are asked to confirm…";
  // Say what the signature approves: a link to this page must not get one blindly.
  api("GET", `/sso/session/${encodeURIComponent(mode.session || "")}`)
    .then((session) => {
      $("intro").textContent =
        `An app wants to ${session.action} for ${session.user_id}. If that was you, sign ` +
        "a message with a wallet linked to the account. Signing is free and sends no " +
        "transaction. If it was not you, close this page.";
    })
    .catch((error) => {
      $("wallets").hidden = true;
      $("intro").textContent = "";
      show(describe(error), "error");
    });
}

if (mode.kind === "gate") {
  document.title = "Join a token-gated room";
  $("title").textContent = "Join this room";
  $("intro").textContent = "Reading the room's rule…";
  api("GET", `/gate/room/${encodeURIComponent(mode.room)}`)
    .then(showRoom)
    .catch((error) => {
      $("wallets").hidden = true;
      $("intro").textContent = "";
      show(describe(error), "error");
    });
}

/** The gate page's room: what api() answered for it, and the wallet checked last. */
const gate = { room: null, wallet: null, address: null };

function showRoom(room) {
  gate.room = room;
  const summary = room.summary || {};
  const title = summary.name || summary.canonical_alias || room.room_id;
  document.title = `Join ${title}`;
  $("title").textContent = title;
  const members = summary.num_joined_members;
  $("intro").textContent =
    (summary.topic ? summary.topic + " " : "") +
    (members ? `${members} member${members === 1 ? "" : "s"}. ` : "") +
    "Connect a wallet to check whether it may join. Checking is free and sends nothing.";
  const rule = $("rule");
  rule.replaceChildren();
  if (room.gate && room.gate.rule) {
    rule.append(heading("Who may join"), list([words(room.gate.rule)]));
  } else {
    rule.append(heading("Who may join"), paragraph("Anyone: this room has no token gate."));
  }
  if (room.roles && Array.isArray(room.roles.roles)) {
    rule.append(
      heading("Roles"),
      list(
        room.roles.roles.map((role) => {
          const item = document.createElement("span");
          item.append(`Power level ${role.power_level}: `, words(role.rule));
          return item;
        }),
      ),
    );
  }
  $("gate").hidden = false;
}

function heading(text) {
  const h = document.createElement("h2");
  h.textContent = text;
  return h;
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

function list(nodes) {
  const ul = document.createElement("ul");
  for (const node of nodes) {
    const li = document.createElement("li");
    li.append(node);
    ul.append(li);
  }
  return ul;
}

function chainLabel(caip2) {
  const names = (gate.room && gate.room.chains) || {};
  const id = Number(String(caip2).split(":")[1]);
  return CHAIN_NAMES[id] || names[caip2] || caip2;
}

function token(chain, address) {
  const tokens = (gate.room && gate.room.tokens) || {};
  const key = Object.keys(tokens).find((k) => k.toLowerCase() === `${chain}:${address}`.toLowerCase());
  return (key && tokens[key]) || {};
}

function addressLabel(address) {
  const names = (gate.room && gate.room.ens_names) || {};
  const key = Object.keys(names).find((k) => k.toLowerCase() === String(address).toLowerCase());
  return key ? `${names[key]} (${short(address)})` : short(address);
}

function short(address) {
  const a = String(address);
  return a.length > 12 ? `${a.slice(0, 6)}…${a.slice(-4)}` : a;
}

/** A base-unit amount in whole units, as wallets show it. */
function units(amount, decimals) {
  let value;
  try {
    value = BigInt(amount);
  } catch {
    return String(amount);
  }
  if (!decimals) return value.toString();
  const scale = 10n ** BigInt(decimals);
  const whole = value / scale;
  const fraction = (value % scale).toString().padStart(decimals, "0").replace(/0+$/, "");
  return fraction ? `${whole}.${fraction}` : whole.toString();
}

function tokenLabel(t, address) {
  if (t.symbol && t.name) return `${t.symbol} (${t.name})`;
  return t.symbol || t.name || short(address);
}

function duration(seconds) {
  const sizes = [["year", 31536000], ["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [name, size] of sizes) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return `${seconds} seconds`;
}

/** A rule in words, as a text node or a nested list. */
function words(rule) {
  const [kind, body] = Object.entries(rule || {})[0] || [];
  const text = (t) => document.createTextNode(t);
  const on = (leaf) => ` on ${chainLabel(leaf.chain)}`;
  switch (kind) {
    case "all":
    case "any": {
      const span = document.createElement("span");
      span.append(kind === "all" ? "All of:" : "Any of:", list(body.map(words)));
      return span;
    }
    case "not": {
      const span = document.createElement("span");
      span.append("Not this: ", words(body));
      return span;
    }
    case "native":
      return text(`Hold at least ${units(body.min || "1", 18)} of the coin${on(body)}`);
    case "erc20": {
      const t = token(body.chain, body.contract);
      return text(`Hold at least ${units(body.min || "1", t.decimals)} ${tokenLabel(t, body.contract)}${on(body)}`);
    }
    case "erc721": {
      const t = token(body.chain, body.contract);
      const ids = body.token_ids ? ` number ${body.token_ids.join(", ")}` : "";
      return text(`Own a ${tokenLabel(t, body.contract)} NFT${ids}${on(body)}`);
    }
    case "erc1155": {
      const t = token(body.chain, body.contract);
      return text(`Hold at least ${body.min || "1"} of token ${body.token_id} of ${tokenLabel(t, body.contract)}${on(body)}`);
    }
    case "unlock": {
      const t = token(body.chain, body.lock);
      return text(`Hold a valid key of the ${tokenLabel(t, body.lock)} lock (Unlock Protocol)${on(body)}`);
    }
    case "paid": {
      const t = body.token ? token(body.chain, body.token) : {};
      const amount = units(body.amount, body.token ? t.decimals : 18);
      const what = body.token ? tokenLabel(t, body.token) : "of the coin";
      return text(`Pay at least ${amount} ${what} to ${addressLabel(body.recipient)}${on(body)}; a payment counts for ${duration(body.period_s)}`);
    }
    case "call":
      return text(`${body.function} of ${short(body.contract)}${on(body)} gives ${body.expect.op} ${JSON.stringify(body.expect.value)}`);
    case "ens":
      return text(body.name ? `Own the ENS name ${body.name}` : `Have a primary ENS name under ${body.parent}`);
    case "allowlist":
      return text(`Be one of ${body.length} listed addresses`);
    default:
      return text("A condition this page cannot show");
  }
}

/** The sub-rule at a verdict's leaf path, e.g. `any[1].erc20`. */
function ruleAt(rule, path) {
  let node = rule;
  for (const step of path.split(".")) {
    const m = step.match(/^(\w+)(?:\[(\d+)\])?$/);
    if (!m || !node) return null;
    if (m[2] !== undefined) {
      node = node[m[1]] && node[m[1]][Number(m[2])];
    } else if (m[1] === "not") {
      node = node.not;
    } else {
      return node;
    }
  }
  return node;
}

function when(ms) {
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

async function checkWallet(wallet) {
  if (busy) return;
  busy = true;
  render();
  try {
    const address = await shareAccount(wallet);
    show(`Checking ${short(address)}…`, "info");
    const result = await api("POST", `/gate/room/${encodeURIComponent(gate.room.room_id)}/check`, { address });
    gate.wallet = wallet;
    gate.address = address;
    show("", "");
    showVerdict(result, address);
  } catch (error) {
    show(describe(error), "error");
  } finally {
    busy = false;
    render();
  }
}

function showVerdict(result, address) {
  const box = $("verdict");
  box.replaceChildren();
  const verdict = result.gate;
  if (result.pass) {
    box.className = "pass";
    box.append(paragraph(verdict ? `${short(address)} meets the room's rule.` : `${short(address)} may join.`));
    if (verdict && verdict.expires_at) {
      box.append(paragraph(`Your paid access lasts until ${when(verdict.expires_at)}; pay again before then to stay.`));
    }
    const role = (result.roles || []).find((r) => r.verdict && r.verdict.pass);
    if (role) box.append(paragraph(`In the room you will have power level ${role.power_level}.`));
    $("join").hidden = false;
  } else {
    box.className = "fail";
    box.append(paragraph(`${short(address)} does not meet the room's rule yet. What is missing:`));
    const missing = (verdict ? verdict.leaves : [])
      .filter((leaf) => !leaf.unknown && leaf.pass === leaf.negated)
      .map((leaf) => {
        const span = document.createElement("span");
        const sub = ruleAt(gate.room.gate.rule, leaf.path);
        span.append(sub ? words(sub) : leaf.required, ` — ${leafValue(sub, leaf)}. ${howTo(sub, leaf)}`);
        return span;
      });
    const unknown = (verdict ? verdict.leaves : []).filter((leaf) => leaf.unknown).length;
    box.append(list(missing));
    if (unknown) box.append(paragraph("Some conditions could not be read from the chain right now.", "muted"));
    box.append(paragraph("Connect another wallet, or check again once you have it.", "muted"));
    $("join").hidden = true;
  }
  box.hidden = false;
}

function leafValue(sub, leaf) {
  const [kind, body] = Object.entries(sub || {})[0] || [];
  if (leaf.negated) return "this wallet holds it, which keeps it out";
  if ((kind === "erc20" || kind === "native") && /^\d+$/.test(leaf.value)) {
    const t = kind === "erc20" ? token(body.chain, body.contract) : { decimals: 18 };
    return `this wallet holds ${units(leaf.value, t.decimals)}`;
  }
  return `this wallet: ${leaf.value}`;
}

function howTo(sub, leaf) {
  const [kind] = Object.entries(sub || {})[0] || [];
  if (leaf.negated) return "";
  if (kind === "paid") return "Pay from this wallet, then check again.";
  if (kind === "allowlist") return "Ask the room's administrators to add it.";
  if (kind === "ens") return "Get the name, then check again.";
  return "Get it into this wallet, then check again.";
}

$("join").addEventListener("click", () => joinRoom());

async function joinRoom() {
  if (busy || !gate.wallet) return;
  busy = true;
  render();
  $("join").disabled = true;
  try {
    const { provider } = gate.wallet;
    const address = gate.address;
    const params = await api("GET", "/siwe/nonce");
    const chainId = await chooseChain(provider, params.chain_ids);
    const { message } = await api("POST", "/siwe/message", { address, chain_id: chainId, nonce: params.nonce });
    show("Sign the message in your wallet. Signing is free and sends no transaction.", "info");
    const signature = await provider.request({ method: "personal_sign", params: [toHex(message), address] });
    show("Joining…", "info");
    const login = await matrix("POST", "/_matrix/client/v3/login", null, {
      type: "io.matrixon.login.siwe",
      message,
      signature,
      initial_device_display_name: "Gate page",
    });
    try {
      await matrix("POST", `/_matrix/client/v3/join/${encodeURIComponent(gate.room.room_id)}`, login.access_token, {});
    } finally {
      // The page signed in only to join: it keeps no session.
      await matrix("POST", "/_matrix/client/v3/logout", login.access_token, {}).catch(() => {});
    }
    show(`You joined as ${login.user_id}.`, "ok");
    $("join").hidden = true;
    $("wallets").hidden = true;
    const open = $("open");
    open.href = gate.room.open_url;
    open.hidden = false;
  } catch (error) {
    show(describe(error), "error");
  } finally {
    busy = false;
    $("join").disabled = false;
    render();
  }
}

/** A Matrix API call; the server's refusals become `Refused` with its errcode and words. */
async function matrix(method, path, token, body) {
  let response;
  try {
    const headers = body ? { "Content-Type": "application/json" } : {};
    if (token) headers.Authorization = `Bearer ${token}`;
    response = await fetch(path, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new Problem("The server cannot be reached. Check your connection and try again.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Refused(response.status, data.errcode, data.error || `HTTP ${response.status}`);
  }
  return data;
}

/** The account the wallet shares with the page (it may ask its user first). */
async function shareAccount(wallet) {
  show("Waiting for your wallet to share an account…", "info");
  const accounts = await wallet.provider.request({ method: "eth_requestAccounts" });
  if (!Array.isArray(accounts) || typeof accounts[0] !== "string") {
    throw new Problem("Your wallet did not share an account. Unlock it and try again.");
  }
  return accounts[0];
}

async function signIn(wallet) {
  if (busy) return;
  busy = true;
  render();
  try {
    const address = await shareAccount(wallet);
    const params = await api("GET", "/siwe/nonce");
    const chainId = await chooseChain(wallet.provider, params.chain_ids);
    const { message } = await api("POST", "/siwe/message", {
      address,
      chain_id: chainId,
      nonce: params.nonce,
    });
    show("Sign the message in your wallet. Signing is free and sends no transaction.", "info");
    const signature = await wallet.provider.request({
      method: "personal_sign",
      params: [toHex(message), address],
    });
    show("Checking the signature…", "info");
    if (mode.kind === "oauth") {
      const result = await api("POST", "/oauth/wallet", {
        request: mode.request,
        csrf: mode.csrf,
        message,
        signature,
      });
      show(result.linked ? "Wallet linked. Continuing…" : "Signed in. Continuing…", "ok");
      window.location.assign(result.redirect_to);
    } else if (mode.kind === "login") {
      const result = await api("POST", "/sso/login", {
        redirect_url: mode.redirectUrl,
        message,
        signature,
      });
      finishLogin(result);
    } else {
      await api("POST", "/sso/authenticate", {
        session: mode.session,
        stage: mode.stage,
        message,
        signature,
      });
      finishAuth();
    }
  } catch (error) {
    show(describe(error), "error");
  } finally {
    busy = false;
    render();
  }
}

/** A chain the server accepts: the wallet's own, else the first one after a switch. */
async function chooseChain(provider, allowed) {
  const ids = allowed.map((caip2) => Number(caip2.split(":")[1]));
  const current = Number.parseInt(await provider.request({ method: "eth_chainId" }), 16);
  if (ids.includes(current)) return current;
  try {
    await provider.request({
      method: "wallet_switchEthereumChain",
      params: [{ chainId: "0x" + ids[0].toString(16) }],
    });
    const switched = Number.parseInt(await provider.request({ method: "eth_chainId" }), 16);
    if (ids.includes(switched)) return switched;
  } catch (error) {
    if (error && error.code === 4001) throw error;
  }
  throw new Problem(
    `Your wallet is on the wrong network (${chainName(current)}). This server accepts ` +
      `sign-ins on ${ids.map(chainName).join(", ")}: switch networks in your wallet and try again.`,
  );
}

function chainName(id) {
  return CHAIN_NAMES[id] ? `${CHAIN_NAMES[id]}, chain ${id}` : `chain ${id}`;
}

function toHex(text) {
  const bytes = new TextEncoder().encode(text);
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One of this server's own calls (under the io.matrixon prefix), signed in or not. */
function api(method, path, body) {
  return matrix(method, API + path, null, body);
}

function describe(error) {
  if (error instanceof Problem) return error.message;
  if (error instanceof Refused) {
    if (error.status === 429) return "Too many attempts. Wait a moment and try again.";
    if (error.status >= 500) {
      return `The server could not check your sign-in right now. Try again in a moment. (${error.message})`;
    }
    return error.message; // the server's own words say what was wrong
  }
  if (error && error.code === 4001) {
    return "You declined the request in your wallet. Choose a wallet to try again.";
  }
  if (error && error.code === -32002) {
    return "Your wallet already has a request waiting: open it to continue.";
  }
  const detail = error && error.message ? error.message : String(error);
  return `Your wallet reported an error: ${detail}`;
}

function finishLogin(result) {
  if (!result.confirm) {
    show("Signed in. Returning to your app…", "ok");
    window.location.assign(result.redirect_to);
    return;
  }
  // Not a client the server knows: the user confirms where the login token goes.
  $("wallets").hidden = true;
  $("intro").hidden = true;
  show("", "");
  $("destination").textContent = result.destination;
  for (const element of document.querySelectorAll(".destination")) {
    element.textContent = result.destination;
  }
  $("account").textContent = result.user_id;
  $("continue").href = result.redirect_to;
  $("cancel").addEventListener("click", () => {
    $("continue").removeAttribute("href");
    $("confirm").hidden = true;
    show("Sign-in cancelled. You can close this page.", "info");
  });
  $("confirm").hidden = false;
}

function finishAuth() {
  $("wallets").hidden = true;
  $("intro").hidden = true;
  show("Done. Return to your app to continue.", "ok");
  // What the spec asks of fallback pages, for clients that opened this one.
  if (typeof window.onAuthDone === "function") {
    window.onAuthDone();
  } else if (window.opener && window.opener.postMessage) {
    window.opener.postMessage("authDone", "*");
  }
}
