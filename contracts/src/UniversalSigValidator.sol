// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4);
}

/// @notice ERC-6492 signature check, run without deployment: an `eth_call` whose data is this
/// contract's creation code followed by `abi.encode(signer, hash, signature)` returns one
/// byte, 0x01 when the signature is valid. A signature ending in the ERC-6492 magic suffix
/// carries `abi.encode(factory, factoryCalldata, innerSignature)`: the factory call deploys
/// the account inside the simulation, then ERC-1271 decides. Plain accounts fall back to
/// ecrecover, as the ERC specifies.
contract UniversalSigValidator {
    bytes32 internal constant ERC6492_MAGIC = 0x6492649264926492649264926492649264926492649264926492649264926492;

    constructor(address signer, bytes32 hash, bytes memory signature) {
        bool valid = isValidSig(signer, hash, signature);
        assembly {
            mstore(0, valid)
            return(31, 1)
        }
    }

    function isValidSig(address signer, bytes32 hash, bytes memory signature) internal returns (bool) {
        bytes memory inner = signature;
        if (signature.length >= 32 && lastWord(signature) == ERC6492_MAGIC) {
            bytes memory wrapped = new bytes(signature.length - 32);
            for (uint256 i = 0; i < wrapped.length; i++) {
                wrapped[i] = signature[i];
            }
            address factory;
            bytes memory factoryCalldata;
            (factory, factoryCalldata, inner) = abi.decode(wrapped, (address, bytes, bytes));
            if (signer.code.length == 0) {
                (bool deployed,) = factory.call(factoryCalldata);
                if (!deployed) {
                    return false;
                }
            }
        }
        if (signer.code.length > 0) {
            try IERC1271(signer).isValidSignature(hash, inner) returns (bytes4 magic) {
                return magic == 0x1626ba7e;
            } catch {
                return false;
            }
        }
        if (inner.length != 65) {
            return false;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(inner, 32))
            s := mload(add(inner, 64))
            v := byte(0, mload(add(inner, 96)))
        }
        if (v < 27) {
            v += 27;
        }
        return ecrecover(hash, v, r, s) == signer;
    }

    function lastWord(bytes memory data) internal pure returns (bytes32 word) {
        assembly {
            word := mload(add(data, mload(data)))
        }
    }
}
