// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice The ENS resolution contracts a client talks to, written for the test chain with the
/// standard interfaces: a Universal Resolver (`resolve`, ENSIP-10 wildcards, EIP-3668 CCIP-Read
/// wrapping; `reverse` per ENSIP-19, the forward check left to the client), a reverse registrar, and an
/// offchain resolver that answers through a CCIP-Read gateway. Tests place the Universal
/// Resolver at its mainnet address (0xeEeEEEeE14D718C2B47D9923Deab1335E144EeEe).

interface IRegistry {
    function owner(bytes32 node) external view returns (address);
    function resolver(bytes32 node) external view returns (address);
    function setSubnodeRecord(bytes32 node, bytes32 label, address owner, address resolver, uint64 ttl) external;
}

interface INameResolver {
    function name(bytes32 node) external view returns (string memory);
    function setName(bytes32 node, string calldata name) external;
}

interface IExtendedResolver {
    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory);
}

/// EIP-3668.
error OffchainLookup(address sender, string[] urls, bytes callData, bytes4 callbackFunction, bytes extraData);

library NameCoder {
    /// Namehash of a DNS-encoded name, from `offset`.
    function namehash(bytes memory name, uint256 offset) internal pure returns (bytes32 node) {
        uint256 length = uint8(name[offset]);
        if (length == 0) return bytes32(0);
        bytes32 label;
        assembly {
            label := keccak256(add(add(name, 0x21), offset), length)
        }
        return keccak256(abi.encodePacked(namehash(name, offset + length + 1), label));
    }

    /// The DNS encoding of a dotted name.
    function encode(string memory dotted) internal pure returns (bytes memory out) {
        bytes memory s = bytes(dotted);
        out = new bytes(s.length + 2);
        uint256 start = 0;
        for (uint256 i = 0; i <= s.length; i++) {
            if (i == s.length || s[i] == ".") {
                out[start] = bytes1(uint8(i - start));
                for (uint256 j = start; j < i; j++) {
                    out[j + 1] = s[j];
                }
                start = i + 1;
            }
        }
        out[s.length + 1] = 0;
    }

    function hexAddress(address a) internal pure returns (bytes32 label) {
        bytes memory digits = "0123456789abcdef";
        bytes memory out = new bytes(40);
        uint160 v = uint160(a);
        for (uint256 i = 40; i > 0; i--) {
            out[i - 1] = digits[v & 0xf];
            v >>= 4;
        }
        return keccak256(out);
    }
}

contract UniversalResolver {
    bytes32 constant ADDR_REVERSE_NODE = 0x91d1777781884d03a6757a803996e38de2a42967fb37eeaca72729271025a9e2;
    IRegistry public immutable registry;

    error ResolverNotFound(bytes name);

    constructor(IRegistry ens) {
        registry = ens;
    }

    /// The resolver of `name` or of its closest ancestor that has one, and whether it was
    /// found on the name itself.
    function findResolver(bytes memory name) public view returns (address resolver, bool exact) {
        uint256 offset = 0;
        while (uint8(name[offset]) != 0) {
            resolver = registry.resolver(NameCoder.namehash(name, offset));
            if (resolver != address(0)) return (resolver, offset == 0);
            offset += uint8(name[offset]) + 1;
        }
        return (address(0), false);
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory, address) {
        (address resolver, bool exact) = findResolver(name);
        if (resolver == address(0)) revert ResolverNotFound(name);
        bytes memory call = exact ? data : abi.encodeCall(IExtendedResolver.resolve, (name, data));
        (bool ok, bytes memory result) = resolver.staticcall(call);
        if (!ok) _wrapOffchain(resolver, result);
        if (!exact) result = abi.decode(result, (bytes));
        return (result, resolver);
    }

    /// CCIP-Read continuation: hands the gateway's answer to the resolver's callback.
    function resolveCallback(bytes calldata response, bytes calldata extraData)
        external
        view
        returns (bytes memory, address)
    {
        (address resolver, bytes4 callback, bytes memory inner) = abi.decode(extraData, (address, bytes4, bytes));
        (bool ok, bytes memory result) = resolver.staticcall(abi.encodeWithSelector(callback, response, inner));
        if (!ok) _wrapOffchain(resolver, result);
        return (abi.decode(result, (bytes)), resolver);
    }

    /// ENSIP-19 primary name of `lookupAddress` (coin type 60), as the reverse record says it.
    /// The mainnet resolver also checks it forward; this one leaves that to the client, so that
    /// tests see the client's own check at work.
    function reverse(bytes calldata lookupAddress, uint256 coinType)
        external
        view
        returns (string memory primary, address resolver, address reverseResolver)
    {
        require(coinType == 60 && lookupAddress.length == 20, "only Ethereum addresses here");
        address addr = address(bytes20(lookupAddress));
        bytes32 node = keccak256(abi.encodePacked(ADDR_REVERSE_NODE, NameCoder.hexAddress(addr)));
        reverseResolver = registry.resolver(node);
        if (reverseResolver == address(0)) return ("", address(0), address(0));
        primary = INameResolver(reverseResolver).name(node);
        if (bytes(primary).length > 0) (resolver,) = findResolver(NameCoder.encode(primary));
    }

    function _wrapOffchain(address resolver, bytes memory revertData) internal view {
        if (revertData.length >= 4 && bytes4(revertData) == OffchainLookup.selector) {
            bytes memory args = new bytes(revertData.length - 4);
            for (uint256 i = 4; i < revertData.length; i++) {
                args[i - 4] = revertData[i];
            }
            (address sender, string[] memory urls, bytes memory callData, bytes4 callback, bytes memory extra) =
                abi.decode(args, (address, string[], bytes, bytes4, bytes));
            if (sender == resolver) {
                revert OffchainLookup(
                    address(this),
                    urls,
                    callData,
                    this.resolveCallback.selector,
                    abi.encode(resolver, callback, extra)
                );
            }
        }
        assembly {
            revert(add(revertData, 32), mload(revertData))
        }
    }
}

/// Claims `<hex address>.addr.reverse` for the caller and sets its name in the resolver.
contract ReverseRegistrar {
    bytes32 constant ADDR_REVERSE_NODE = 0x91d1777781884d03a6757a803996e38de2a42967fb37eeaca72729271025a9e2;
    IRegistry public immutable registry;
    INameResolver public immutable defaultResolver;

    constructor(IRegistry ens, INameResolver resolver) {
        registry = ens;
        defaultResolver = resolver;
    }

    function setName(string calldata name) external returns (bytes32 node) {
        bytes32 label = NameCoder.hexAddress(msg.sender);
        registry.setSubnodeRecord(ADDR_REVERSE_NODE, label, address(this), address(defaultResolver), 0);
        node = keccak256(abi.encodePacked(ADDR_REVERSE_NODE, label));
        defaultResolver.setName(node, name);
    }
}

/// A wildcard (ENSIP-10) resolver whose answers come from a CCIP-Read gateway. The callback
/// trusts the gateway's answer as is: it exists to test clients, not to secure names.
contract OffchainResolver {
    string public url;

    constructor(string memory gateway) {
        url = gateway;
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 || id == 0x9061b923;
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory) {
        string[] memory urls = new string[](1);
        urls[0] = url;
        bytes memory callData = abi.encodeCall(IExtendedResolver.resolve, (name, data));
        revert OffchainLookup(address(this), urls, callData, this.resolveWithProof.selector, callData);
    }

    function resolveWithProof(bytes calldata response, bytes calldata) external pure returns (bytes memory) {
        return abi.decode(response, (bytes));
    }
}
