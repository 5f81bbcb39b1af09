"""TikTok Events API 2.0 facts: names, enums and codes from ../shared/docs/tiktok-events-api.md."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://business-api.tiktok.com/open_api"
TRACK_PATH = "/v1.3/event/track/"
MAX_EVENTS_PER_REQUEST = 1000

EVENT_SOURCES = frozenset({"web", "app", "offline", "crm"})

# Unified list for web, offline and CRM (since 2025-05).
STANDARD_EVENTS = frozenset({
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "ApplicationApproval", "CompleteRegistration",
    "Contact", "CustomizeProduct", "Download", "FindLocation", "InitiateCheckout", "Lead", "Purchase",
    "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe", "ViewContent",
})
# Still accepted and converted by TikTok (ClickButton and PlaceAnOrder until 2027).
LEGACY_EVENTS = frozenset({"CompletePayment", "SubmitForm", "ClickButton", "PlaceAnOrder"})
APP_EVENTS = frozenset({
    "AchieveLevel", "AddPaymentInfo", "AddToCart", "AddToWishlist", "Checkout", "CompleteTutorial",
    "CreateGroup", "CreateRole", "GenerateLead", "InAppADClick", "InAppADImpr", "InstallApp",
    "JoinGroup", "LaunchAPP", "LoanApplication", "LoanApproval", "LoanDisbursal", "Login", "Purchase",
    "Rate", "Registration", "Search", "SpendCredits", "StartTrial", "Subscribe", "UnlockAchievement",
    "ViewContent",
})

CURRENCIES = frozenset(
    "AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP GTQ HKD HNL HUF "
    "IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR PEN PHP PKR PLN PYG "
    "QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR".split()
)
CONTENT_TYPES = frozenset({"product", "product_group"})
ATT_STATUSES = frozenset({"AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"})
CUSTOMER_TYPES = frozenset({"new", "returning"})
EVENT_CHANNELS = frozenset({"email", "website", "phone_call", "in_store", "crm", "other"})

# Response codes (HTTP 200 carries application errors: `code` decides).
OK_CODES = frozenset({0, 20001})
THROTTLE_CODES = frozenset({40100, 40016, 40132, 40133})
SERVER_ERROR_CODES = frozenset({50000, 50002, 51305, 60001})
PARAMETER_ERROR_CODES = frozenset({40000, 40002})
PERMISSION_CODES = frozenset({40001})
AUTH_CODES = frozenset({40101, 40102, 40104, 40105})

CODE_PERMISSION = 40001
CODE_INVALID_PARAMETER = 40002
CODE_THROTTLED = 40100
CODE_TOKEN_EMPTY = 40104
CODE_TOKEN_INVALID = 40105
CODE_SERVER_ERROR = 50000


def accepted_event_names(event_source: str) -> frozenset[str]:
    """Event names TikTok accepts for a source; None-like empty set means any name (custom events)."""
    if event_source == "app":
        return APP_EVENTS
    return STANDARD_EVENTS | LEGACY_EVENTS


# Common warehouse event names (GA4/Segment/dbt style) → TikTok names. A mapping's `events:` wins.
GENERIC_EVENT_NAMES = {
    "purchase": "Purchase", "order_completed": "Purchase", "order": "Purchase", "checkout_completed": "Purchase",
    "add_to_cart": "AddToCart", "product_added": "AddToCart",
    "add_to_wishlist": "AddToWishlist", "add_payment_info": "AddPaymentInfo",
    "begin_checkout": "InitiateCheckout", "checkout_started": "InitiateCheckout",
    "sign_up": "CompleteRegistration", "signup": "CompleteRegistration", "registration": "CompleteRegistration",
    "generate_lead": "Lead", "lead": "Lead", "submit_form": "Lead",
    "view_item": "ViewContent", "page_view": "ViewContent", "product_viewed": "ViewContent",
    "search": "Search", "subscribe": "Subscribe", "start_trial": "StartTrial", "contact": "Contact",
    "download": "Download", "schedule": "Schedule", "find_location": "FindLocation",
    "customize_product": "CustomizeProduct", "submit_application": "SubmitApplication",
    "application_approval": "ApplicationApproval",
}
