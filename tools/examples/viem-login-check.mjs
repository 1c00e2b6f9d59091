// Runs the documented viem example against a server, with a JSON-RPC wallet (an anvil node
// that holds the keys and answers personal_sign, as a browser wallet does). Used by the
// integration test `examples::viem_example_signs_in`.
import { createWalletClient, http } from "viem";
import { signIn } from "./viem-login.mjs";

const [server, rpc] = process.argv.slice(2);
const wallet = createWalletClient({ transport: http(rpc) });
const [address] = await wallet.getAddresses();
const session = await signIn(server, wallet, address);
console.log(JSON.stringify({ address, ...session }));
