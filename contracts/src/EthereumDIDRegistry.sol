// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice The owner and delegate parts of ERC-1056 (the did:ethr registry), ABI-compatible:
/// `identityOwner`, `changeOwner`, `validDelegate`, `addDelegate`, `revokeDelegate`, `changed`,
/// and the `DIDOwnerChanged` / `DIDDelegateChanged` events whose `previousChange` links every
/// change of an identity back to the one before. Tests place it at the registry's address
/// 0xdCa7EF03e98e0DC2B855bE647C39ABe984fcF21B.
contract EthereumDIDRegistry {
    mapping(address => address) public owners;
    mapping(address => mapping(bytes32 => mapping(address => uint256))) public delegates;
    mapping(address => uint256) public changed;

    event DIDOwnerChanged(address indexed identity, address owner, uint256 previousChange);
    event DIDDelegateChanged(
        address indexed identity,
        bytes32 delegateType,
        address delegate,
        uint256 validTo,
        uint256 previousChange
    );

    modifier onlyOwner(address identity) {
        require(msg.sender == identityOwner(identity), "bad_actor");
        _;
    }

    function identityOwner(address identity) public view returns (address) {
        address owner = owners[identity];
        return owner == address(0) ? identity : owner;
    }

    function validDelegate(address identity, bytes32 delegateType, address delegate)
        public
        view
        returns (bool)
    {
        return delegates[identity][delegateType][delegate] > block.timestamp;
    }

    function changeOwner(address identity, address newOwner) external onlyOwner(identity) {
        owners[identity] = newOwner;
        emit DIDOwnerChanged(identity, newOwner, changed[identity]);
        changed[identity] = block.number;
    }

    function addDelegate(address identity, bytes32 delegateType, address delegate, uint256 validity)
        external
        onlyOwner(identity)
    {
        uint256 validTo = block.timestamp + validity;
        delegates[identity][delegateType][delegate] = validTo;
        emit DIDDelegateChanged(identity, delegateType, delegate, validTo, changed[identity]);
        changed[identity] = block.number;
    }

    function revokeDelegate(address identity, bytes32 delegateType, address delegate)
        external
        onlyOwner(identity)
    {
        delegates[identity][delegateType][delegate] = block.timestamp;
        emit DIDDelegateChanged(identity, delegateType, delegate, block.timestamp, changed[identity]);
        changed[identity] = block.number;
    }
}
