// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice The ENS registry (EIP-137 interface), for the test chain. Tests place its runtime
/// code at the mainnet registry address 0x00000000000C2E074eC69A0dFb2997BA6C7d2e1e and give the
/// root node an owner with anvil_setStorageAt (records is slot 0), so production code paths
/// run unchanged.
contract ENSRegistry {
    struct Record {
        address owner;
        address resolver;
        uint64 ttl;
    }

    mapping(bytes32 => Record) internal records;

    event NewOwner(bytes32 indexed node, bytes32 indexed label, address owner);
    event Transfer(bytes32 indexed node, address owner);
    event NewResolver(bytes32 indexed node, address resolver);

    constructor() {
        records[0x0].owner = msg.sender;
    }

    modifier authorised(bytes32 node) {
        require(records[node].owner == msg.sender, "ENS: not the owner");
        _;
    }

    function owner(bytes32 node) external view returns (address) {
        return records[node].owner;
    }

    function resolver(bytes32 node) external view returns (address) {
        return records[node].resolver;
    }

    function ttl(bytes32 node) external view returns (uint64) {
        return records[node].ttl;
    }

    function recordExists(bytes32 node) external view returns (bool) {
        return records[node].owner != address(0);
    }

    function setOwner(bytes32 node, address newOwner) external authorised(node) {
        records[node].owner = newOwner;
        emit Transfer(node, newOwner);
    }

    function setResolver(bytes32 node, address newResolver) external authorised(node) {
        records[node].resolver = newResolver;
        emit NewResolver(node, newResolver);
    }

    function setSubnodeOwner(bytes32 node, bytes32 label, address newOwner)
        public
        authorised(node)
        returns (bytes32 subnode)
    {
        subnode = keccak256(abi.encodePacked(node, label));
        records[subnode].owner = newOwner;
        emit NewOwner(node, label, newOwner);
    }

    function setSubnodeRecord(bytes32 node, bytes32 label, address newOwner, address newResolver, uint64 newTtl)
        external
    {
        bytes32 subnode = setSubnodeOwner(node, label, msg.sender);
        records[subnode].resolver = newResolver;
        records[subnode].ttl = newTtl;
        records[subnode].owner = newOwner;
        emit NewResolver(subnode, newResolver);
    }
}

interface IENSOwner {
    function owner(bytes32 node) external view returns (address);
}

/// @notice A public resolver with the standard addr (EIP-137), name (EIP-181) and text
/// (EIP-634) records; the node's registry owner may set them.
contract PublicResolver {
    IENSOwner public immutable ens;
    mapping(bytes32 => address) internal addrs;
    mapping(bytes32 => mapping(uint256 => bytes)) internal coinAddrs;
    mapping(bytes32 => string) internal names;
    mapping(bytes32 => mapping(string => string)) internal texts;

    event AddrChanged(bytes32 indexed node, address a);
    event NameChanged(bytes32 indexed node, string name);
    event TextChanged(bytes32 indexed node, string indexed indexedKey, string key, string value);

    constructor(IENSOwner registry) {
        ens = registry;
    }

    modifier authorised(bytes32 node) {
        require(ens.owner(node) == msg.sender, "resolver: not the owner");
        _;
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        // ERC-165, addr(bytes32), addr(bytes32,uint256), name(bytes32), text(bytes32,string)
        return id == 0x01ffc9a7 || id == 0x3b3b57de || id == 0xf1cb7e06 || id == 0x691f3431
            || id == 0x59d1d43c;
    }

    function setAddr(bytes32 node, address a) external authorised(node) {
        addrs[node] = a;
        emit AddrChanged(node, a);
    }

    function addr(bytes32 node) external view returns (address) {
        return addrs[node];
    }

    /// ENSIP-9 multi-coin addresses (ENSIP-11 coin types for EVM chains).
    function setAddr(bytes32 node, uint256 coinType, bytes calldata a) external authorised(node) {
        coinAddrs[node][coinType] = a;
    }

    function addr(bytes32 node, uint256 coinType) external view returns (bytes memory) {
        if (coinType == 60) return abi.encodePacked(addrs[node]);
        return coinAddrs[node][coinType];
    }

    function setName(bytes32 node, string calldata newName) external authorised(node) {
        names[node] = newName;
        emit NameChanged(node, newName);
    }

    function name(bytes32 node) external view returns (string memory) {
        return names[node];
    }

    function setText(bytes32 node, string calldata key, string calldata value) external authorised(node) {
        texts[node][key] = value;
        emit TextChanged(node, key, key, value);
    }

    function text(bytes32 node, string calldata key) external view returns (string memory) {
        return texts[node][key];
    }
}
