// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";

/// @notice Tokens for gating tests, built on OpenZeppelin (pinned in tools/package.json).
/// Anyone may mint: these exist only on the test chain.
contract TestERC20 is ERC20 {
    constructor() ERC20("Matrixon Test Token", "MXT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

contract TestERC721 is ERC721 {
    constructor() ERC721("Matrixon Test NFT", "MXN") {}

    function mint(address to, uint256 tokenId) external {
        _mint(to, tokenId);
    }
}

contract TestERC1155 is ERC1155 {
    constructor() ERC1155("https://matrixon.test/{id}.json") {}

    function mint(address to, uint256 id, uint256 amount) external {
        _mint(to, id, amount, "");
    }
}
