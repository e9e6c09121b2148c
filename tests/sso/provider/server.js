// A real OpenID Connect provider for Odock's SSO tests: the certified `oidc-provider`
// package with its development interactions (a login form accepting any password for the
// accounts below, then a consent page). Never used outside tests.
//
// Environment: PORT (loopback port), ACCOUNTS_FILE (JSON: {accountId: {claims...}}, read on
// every sign-in so a test can change a person's groups between two logins), CLIENTS_FILE
// (JSON list of oidc-provider client metadata).
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";

import Provider from "oidc-provider";

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const readJson = (path) => JSON.parse(readFileSync(path, "utf8"));

// A fresh signing key per run: the relying party must fetch it from the JWKS endpoint.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256", kid: `test-${port}` };

const configuration = {
  clients: readJson(process.env.CLIENTS_FILE),
  jwks: { keys: [signingKey] },
  cookies: { keys: ["odock-test-cookie-key"] },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["preferred_username", "name"],
    groups: ["groups"],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const accounts = readJson(process.env.ACCOUNTS_FILE);
    if (!(id in accounts)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...accounts[id] };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
