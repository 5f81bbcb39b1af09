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
# App events (TikTok's app event list, as its SDKs spell them). The Android SDK sends "InAppAdImpr" where
# iOS and the Events API docs write "InAppADImpr"; TikTok takes both, so both are accepted.
APP_EVENTS = frozenset({
    "AchieveLevel", "AddPaymentInfo", "AddToCart", "AddToWishlist", "Checkout", "CompleteTutorial",
    "CreateGroup", "CreateRole", "GenerateLead", "ImpressionLevelAdRevenue", "InAppADClick", "InAppADImpr",
    "InAppAdImpr", "InstallApp", "JoinGroup", "LaunchAPP", "LoanApplication", "LoanApproval", "LoanDisbursal",
    "Login", "Purchase", "Rate", "Registration", "Search", "SpendCredits", "StartTrial", "Subscribe",
    "UnlockAchievement", "ViewContent",
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


# Common warehouse event names (GA4/Segment/dbt/Commanders Act style) → TikTok names, one table per kind of
# event source, because TikTok names the same action differently for apps (sign_up is CompleteRegistration
# on the web, Registration in an app). Keys are lower case. A mapping's `events:` wins over both tables.
GENERIC_EVENT_NAMES = {  # web, offline and CRM
    "purchase": "Purchase", "order_completed": "Purchase", "order": "Purchase", "checkout_completed": "Purchase",
    "add_to_cart": "AddToCart", "product_added": "AddToCart",
    "add_to_wishlist": "AddToWishlist", "add_payment_info": "AddPaymentInfo",
    "begin_checkout": "InitiateCheckout", "checkout_started": "InitiateCheckout",
    "initiate_checkout": "InitiateCheckout",
    "sign_up": "CompleteRegistration", "signup": "CompleteRegistration", "registration": "CompleteRegistration",
    "complete_registration": "CompleteRegistration",
    "generate_lead": "Lead", "lead": "Lead", "submit_form": "Lead",
    "view_item": "ViewContent", "page_view": "ViewContent", "product_viewed": "ViewContent",
    "view_content": "ViewContent",
    "search": "Search", "subscribe": "Subscribe", "start_trial": "StartTrial", "contact": "Contact",
    "download": "Download", "schedule": "Schedule", "find_location": "FindLocation",
    "customize_product": "CustomizeProduct", "submit_application": "SubmitApplication",
    "application_approval": "ApplicationApproval",
}
# No key here is the lower case of a web-only TikTok name ("lead", "contact"…): those stay refused on app syncs.
GENERIC_APP_EVENT_NAMES = {
    "purchase": "Purchase", "order_completed": "Purchase", "order": "Purchase", "checkout_completed": "Purchase",
    "add_to_cart": "AddToCart", "product_added": "AddToCart",
    "add_to_wishlist": "AddToWishlist", "add_payment_info": "AddPaymentInfo",
    "begin_checkout": "Checkout", "checkout_started": "Checkout",
    "sign_up": "Registration", "signup": "Registration", "registration": "Registration",
    "complete_registration": "Registration", "login": "Login",
    "generate_lead": "GenerateLead", "submit_form": "GenerateLead",
    "view_item": "ViewContent", "page_view": "ViewContent", "screen_view": "ViewContent",
    "product_viewed": "ViewContent", "view_content": "ViewContent",
    "search": "Search", "subscribe": "Subscribe", "start_trial": "StartTrial",
    "achieve_level": "AchieveLevel", "level_up": "AchieveLevel", "unlock_achievement": "UnlockAchievement",
    "complete_tutorial": "CompleteTutorial", "tutorial_complete": "CompleteTutorial",
    "create_group": "CreateGroup", "join_group": "JoinGroup", "create_role": "CreateRole",
    "spend_credits": "SpendCredits", "spend_virtual_currency": "SpendCredits", "rate": "Rate",
    "install_app": "InstallApp", "launch_app": "LaunchAPP",
    "loan_application": "LoanApplication", "loan_approval": "LoanApproval", "loan_disbursal": "LoanDisbursal",
    "in_app_ad_click": "InAppADClick", "in_app_ad_impr": "InAppADImpr", "ad_impression": "InAppADImpr",
    "impression_level_ad_revenue": "ImpressionLevelAdRevenue",
    # the spellings TikTok's React Native SDK translates before it calls the iOS SDK
    "launchapp": "LaunchAPP", "inappadclick": "InAppADClick", "inappadimpression": "InAppADImpr",
    "spendcredit": "SpendCredits", "loanapply": "LoanApplication",
}


def generic_event_names(event_source: str) -> dict[str, str]:
    """The built-in table of warehouse event names for a source (keys lower case)."""
    return GENERIC_APP_EVENT_NAMES if event_source == "app" else GENERIC_EVENT_NAMES
