// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice The owner part of ERC-1056 (the did:ethr registry): ABI-compatible `identityOwner`,
/// `changeOwner` and `DIDOwnerChanged`. Tests place it at the registry's address
/// 0xdCa7EF03e98e0DC2B855bE647C39ABe984fcF21B.
contract EthereumDIDRegistry {
    mapping(address => address) public owners;
    mapping(address => uint256) public changed;

    event DIDOwnerChanged(address indexed identity, address owner, uint256 previousChange);

    function identityOwner(address identity) public view returns (address) {
        address owner = owners[identity];
        return owner == address(0) ? identity : owner;
    }

    function changeOwner(address identity, address newOwner) external {
        require(msg.sender == identityOwner(identity), "bad_actor");
        owners[identity] = newOwner;
        emit DIDOwnerChanged(identity, newOwner, changed[identity]);
        changed[identity] = block.number;
    }
}
