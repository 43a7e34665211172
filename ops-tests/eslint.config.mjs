// ESLint flat config for the web page's JavaScript (runtime/web/**/*.js): browser ES modules;
// and for the Node scripts of ops-tests.
// ops-tests/run.sh copies this file next to its npm cache (so `@eslint/js` and `globals` resolve
// from there) and runs ESLint from the repository root with --config.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["**/*.js", "**/*.mjs"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
      "no-implied-eval": "error",
      "no-eval": "error",
      "no-new-func": "error",
    },
  },
  {
    files: ["ops-tests/**/*.mjs"],
    languageOptions: { globals: { ...globals.node } },
  },
];
