// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @notice A minimal Unlock Protocol lock for `unlock` gate leaves: keys are ERC-721 tokens
/// that expire, and `getHasValidKey` is the PublicLock view gates read. One key per owner
/// here (PublicLock allows more), extended by buying again.
contract TestLock is ERC721 {
    mapping(address => uint256) public keyExpirationTimestampFor;
    uint256 private nextId = 1;

    constructor() ERC721("Test Lock", "KEY") {}

    function purchase(address recipient, uint256 duration) external {
        if (balanceOf(recipient) == 0) {
            _mint(recipient, nextId++);
        }
        keyExpirationTimestampFor[recipient] = block.timestamp + duration;
    }

    function getHasValidKey(address keyOwner) external view returns (bool) {
        return balanceOf(keyOwner) > 0 && keyExpirationTimestampFor[keyOwner] > block.timestamp;
    }
}
