// Signing in to Matrixon from JavaScript with viem: nonce, SIWE message, wallet signature,
// Matrix login. In a browser dApp, pass a wallet client over the user's wallet:
//   const wallet = createWalletClient({ chain: mainnet, transport: custom(window.ethereum) });
//   const [address] = await wallet.requestAddresses();
//   const session = await signIn("https://matrix.example.org", wallet, address);
import { createSiweMessage } from "viem/siwe";

export async function signIn(server, wallet, address) {
  const api = `${server}/_matrix/client`;
  const nonce = await fetch(`${api}/unstable/io.matrixon/siwe/nonce`);
  const p = await nonce.json();
  const message = createSiweMessage({
    domain: p.domain,
    address,
    statement: p.statement,
    uri: p.uri,
    version: "1",
    chainId: Number(p.chain_ids[0].split(":")[1]),
    nonce: p.nonce,
    issuedAt: new Date(),
  });
  const signature = await wallet.signMessage({ account: address, message });
  const response = await fetch(`${api}/v3/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      type: "io.matrixon.login.siwe",
      message,
      signature,
      initial_device_display_name: "My dApp",
    }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.errcode}: ${body.error}`);
  return body; // { user_id, access_token, device_id, well_known, ... }
}
