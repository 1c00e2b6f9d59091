// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice A minimal contract wallet for tests: valid ERC-1271 signatures are ECDSA
/// signatures of the owner over the hash the verifier passes in.
contract SmartAccount {
    bytes4 internal constant MAGIC = 0x1626ba7e;
    // secp256k1 n / 2: signatures with a larger s are malleable and refused.
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    address public owner;

    constructor(address initialOwner) {
        owner = initialOwner;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return 0xffffffff;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) {
            v += 27;
        }
        if (uint256(s) > HALF_N) {
            return 0xffffffff;
        }
        address signer = ecrecover(hash, v, r, s);
        return signer != address(0) && signer == owner ? MAGIC : bytes4(0xffffffff);
    }
}
