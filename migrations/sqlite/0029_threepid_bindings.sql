-- Which identity servers this server bound a user's e-mail address or phone number on
-- (`/account/3pid/bind`), so that removing the address or the account unbinds it there.
CREATE TABLE threepid_bindings (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);
