// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice A membership registry for `call` gate leaves: any view function works; this one
/// has a boolean, a level and a signed score per address.
contract GateMembers {
    mapping(address => bool) public isMember;
    mapping(address => uint8) public level;
    mapping(address => int256) public score;

    function set(address who, bool member, uint8 newLevel, int256 newScore) external {
        isMember[who] = member;
        level[who] = newLevel;
        score[who] = newScore;
    }

    function alwaysReverts(address) external pure returns (bool) {
        revert("no");
    }
}
