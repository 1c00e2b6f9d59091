// Matrixon's wallet sign-in page. It finds the browser's wallets (EIP-6963, else
// window.ethereum), has one sign a Sign-In with Ethereum message that the server builds
// from its own parameters, and hands the signature back. Three modes, read from the URL:
//   /login/sso/redirect[/ethereum]?redirectUrl=…  log in, then return to the client
//   /auth/<stage>/fallback/web?session=…          complete one step of user-interactive auth
//   /oauth2/wallet?request=…&csrf=…               sign in on the OAuth authorize page (or,
//                                                 from the account page, link one more wallet)
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
const mode = fallback
  ? { kind: "auth", stage: decodeURIComponent(fallback[1]), session: query.get("session") }
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
    button.addEventListener("click", () => signIn(wallet));
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

async function signIn(wallet) {
  if (busy) return;
  busy = true;
  render();
  try {
    show("Waiting for your wallet to share an account…", "info");
    const accounts = await wallet.provider.request({ method: "eth_requestAccounts" });
    if (!Array.isArray(accounts) || typeof accounts[0] !== "string") {
      throw new Problem("Your wallet did not share an account. Unlock it and try again.");
    }
    const address = accounts[0];
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

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
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
