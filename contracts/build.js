// Compiles contracts/src with the pinned solc-js into one JSON artifact per contract
// (ABI, creation bytecode, runtime bytecode). Deterministic: the same sources and compiler
// give byte-identical files, which the test command checks against the committed ones.
// Usage: node contracts/build.js [OUT_DIR]   (default contracts/out)
const fs = require("fs");
const path = require("path");
const solc = require(path.join(__dirname, "..", "tools", "node_modules", "solc"));

const srcDir = path.join(__dirname, "src");
const outDir = path.resolve(process.argv[2] || path.join(__dirname, "out"));
const sources = {};
for (const file of fs.readdirSync(srcDir).sort()) {
  if (file.endsWith(".sol")) {
    sources[file] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
  }
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    // Artifacts for our own sources only, not for every imported library contract.
    outputSelection: Object.fromEntries(
      Object.keys(sources).map((f) => [f, { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] }]),
    ),
  },
};
// Imports resolve to our own sources, else to the pinned npm packages (OpenZeppelin).
function findImports(importPath) {
  const candidates = [path.join(srcDir, importPath), path.join(__dirname, "..", "tools", "node_modules", importPath)];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `not found: ${importPath}` };
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);
fs.mkdirSync(outDir, { recursive: true });
for (const file of Object.keys(output.contracts).filter((f) => f in sources).sort()) {
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    const artifact = {
      compiler: solc.version(),
      source: `contracts/src/${file}`,
      abi: contract.abi,
      bytecode: "0x" + contract.evm.bytecode.object,
      deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    };
    fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
  }
}
console.error(`compiled ${Object.keys(sources).length} sources into ${outDir}`);
