// oidc-stub.mjs — stands in for @vercel/oidc on the test page: only the AI
// Gateway provider (never used by the chat transport) imports it, and its
// browser build is CommonJS, which an import map cannot load.
const unavailable = () => { throw new Error('@vercel/oidc is not available on this test page'); };
export const getContext = () => ({});
export const getVercelOidcToken = unavailable;
export const getVercelOidcTokenSync = unavailable;
export const getVercelToken = unavailable;
export class AccessTokenMissingError extends Error {}
export class RefreshAccessTokenFailedError extends Error {}
