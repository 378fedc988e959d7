import { detail, prefix, signIn } from "./api.js";

const form = document.getElementById("sign-in");
const error = form.querySelector("[data-error-for=token]");

form.onsubmit = async (event) => {
  event.preventDefault();
  error.textContent = "";
  const token = form.token.value.trim();
  const tenant = form.tenant.value.trim();
  const auth = { Authorization: `Bearer ${token}` };
  const operator = (await fetch("/tenants", { headers: auth })).ok;
  let next = `${prefix}/tenants`;
  if (tenant) {
    const response = await fetch(`/tenants/${encodeURIComponent(tenant)}`, { headers: auth });
    if (!response.ok) {
      error.textContent = response.status === 401 ? `This token does not administer a tenant "${tenant}".`
                                                  : await detail(response);
      return;
    }
    next = `${prefix}/tenants/${encodeURIComponent(tenant)}/lines`;
  } else if (!operator) {
    error.textContent = "Give your tenant: only the operator's token sees every tenant.";
    return;
  }
  signIn(token, operator);
  const asked = new URLSearchParams(location.search).get("next");
  location.href = asked && asked.startsWith(prefix + "/") ? asked : next;
};
