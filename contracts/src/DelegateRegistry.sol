// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice The part of delegate.xyz's DelegateRegistry v2 that gates read and tests write:
/// ABI-compatible for delegateAll, delegateContract, getIncomingDelegations and the events
/// the real registry emits for the first two (the server watches them). Tests place it
/// at the canonical address 0x00000000000000447e69651d841bD8D104Bed493 with anvil_setCode.
contract DelegateRegistry {
    enum DelegationType {
        NONE,
        ALL,
        CONTRACT,
        ERC721,
        ERC20,
        ERC1155
    }

    struct Delegation {
        DelegationType type_;
        address to;
        address from;
        bytes32 rights;
        address contract_;
        uint256 tokenId;
        uint256 amount;
    }

    Delegation[] internal delegations;

    event DelegateAll(address indexed from, address indexed to, bytes32 rights, bool enable);
    event DelegateContract(
        address indexed from, address indexed to, address indexed contract_, bytes32 rights, bool enable
    );

    function delegateAll(address to, bytes32 rights, bool enable) external payable returns (bytes32) {
        emit DelegateAll(msg.sender, to, rights, enable);
        return _set(Delegation(DelegationType.ALL, to, msg.sender, rights, address(0), 0, 0), enable);
    }

    function delegateContract(address to, address contract_, bytes32 rights, bool enable)
        external
        payable
        returns (bytes32)
    {
        emit DelegateContract(msg.sender, to, contract_, rights, enable);
        return _set(Delegation(DelegationType.CONTRACT, to, msg.sender, rights, contract_, 0, 0), enable);
    }

    function getIncomingDelegations(address to) external view returns (Delegation[] memory out) {
        uint256 count;
        for (uint256 i = 0; i < delegations.length; i++) {
            if (delegations[i].to == to) count++;
        }
        out = new Delegation[](count);
        uint256 j;
        for (uint256 i = 0; i < delegations.length; i++) {
            if (delegations[i].to == to) out[j++] = delegations[i];
        }
    }

    function _set(Delegation memory d, bool enable) internal returns (bytes32 hash) {
        hash = keccak256(abi.encode(d.type_, d.to, d.from, d.rights, d.contract_));
        for (uint256 i = 0; i < delegations.length; i++) {
            Delegation storage e = delegations[i];
            if (keccak256(abi.encode(e.type_, e.to, e.from, e.rights, e.contract_)) == hash) {
                if (!enable) {
                    delegations[i] = delegations[delegations.length - 1];
                    delegations.pop();
                }
                return hash;
            }
        }
        if (enable) delegations.push(d);
    }
}
