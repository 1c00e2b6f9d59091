// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SmartAccount} from "./SmartAccount.sol";

/// @notice Deploys SmartAccounts with CREATE2, so an account's address is known (and can
/// sign, ERC-6492) before it exists.
contract AccountFactory {
    function deploy(address owner, bytes32 salt) external returns (address account) {
        account = predict(owner, salt);
        if (account.code.length == 0) {
            new SmartAccount{salt: salt}(owner);
        }
    }

    function predict(address owner, bytes32 salt) public view returns (address) {
        bytes32 codeHash = keccak256(abi.encodePacked(type(SmartAccount).creationCode, abi.encode(owner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, codeHash)))));
    }
}
