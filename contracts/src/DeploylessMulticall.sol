// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice Multicall3's `aggregate3` for chains without Multicall3, run without deployment:
/// an `eth_call` with no `to` whose data is this contract's creation code followed by
/// `abi.encode(multicall, calls)` returns `abi.encode(block.number, results)`. Calls to
/// `multicall` (the address callers use for Multicall3's own views) are answered here:
/// `getEthBalance(address)` and `getBlockNumber()`; every other call is made as Multicall3
/// would make it, each failure kept apart.
contract DeploylessMulticall {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    constructor(address multicall, Call3[] memory calls) {
        Result[] memory results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            if (calls[i].target == multicall) {
                results[i] = ownView(calls[i].callData);
            } else {
                (bool success, bytes memory data) = calls[i].target.call(calls[i].callData);
                results[i] = Result(success, data);
            }
        }
        bytes memory out = abi.encode(block.number, results);
        assembly {
            return(add(out, 32), mload(out))
        }
    }

    /// Multicall3's views that callers read: a balance, the block number.
    function ownView(bytes memory data) internal view returns (Result memory) {
        if (data.length == 36 && bytes4(data) == bytes4(keccak256("getEthBalance(address)"))) {
            address account;
            assembly {
                account := mload(add(data, 36))
            }
            return Result(true, abi.encode(account.balance));
        }
        if (data.length == 4 && bytes4(data) == bytes4(keccak256("getBlockNumber()"))) {
            return Result(true, abi.encode(block.number));
        }
        return Result(false, "");
    }
}
