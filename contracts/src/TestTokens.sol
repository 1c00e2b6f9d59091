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

/// An NFT whose token URIs are set by the minter: ENS avatar (ENSIP-12) records point at it.
contract TestAvatarNFT is ERC721 {
    mapping(uint256 => string) internal uris;

    constructor() ERC721("Matrixon Avatar", "MXA") {}

    function mint(address to, uint256 tokenId, string calldata uri) external {
        _mint(to, tokenId);
        uris[tokenId] = uri;
    }

    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return uris[tokenId];
    }
}
